"""The database handle: created unbound here, bound to the configured database at start.

SQLite runs with WAL, foreign keys, a busy timeout and synchronous=FULL: a queued
email to a vendor is a promise to a caller and must survive a power cut.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import peewee

if TYPE_CHECKING:
    from collections.abc import Iterator

    from outofoffice.config import Config

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,
    "synchronous": 2,  # FULL
    "secure_delete": 1,  # deleted personal data is overwritten, not left in free pages
}


class DatabaseError(Exception):
    """The configured database cannot be opened."""


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only; SQLite gives its WAL and
    shared-memory files the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return


def connect_url(url: str) -> peewee.Database:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        return peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from playhouse.db_url import connect
        except ImportError as exc:  # pragma: no cover - playhouse ships with peewee
            raise DatabaseError(str(exc)) from None
        try:
            return connect(url)
        except (ImportError, peewee.ImproperlyConfigured) as exc:
            raise DatabaseError(f"PostgreSQL needs the psycopg2 driver: {exc}") from None
    raise DatabaseError(f"unsupported database URL {url!r}")


def bind(config: Config) -> peewee.Database:
    """Point the shared handle at the configured database (once per process or test)."""
    real = connect_url(config.database_url)
    if not database.obj or database.obj.database != real.database:
        if database.obj and not database.obj.is_closed():
            database.obj.close()
        database.initialize(real)
    return database.obj


def is_sqlite() -> bool:
    return isinstance(database.obj, peewee.SqliteDatabase)


_writer = threading.Lock()


@contextmanager
def write() -> Iterator[None]:
    """A write transaction. On SQLite it takes the write lock up front (BEGIN
    IMMEDIATE), so two writers wait for each other instead of failing on upgrade; and
    the threads of one process queue on a lock of their own first, because SQLite's
    busy handler sleeps in steps of up to 100 ms while it polls."""
    if database.in_transaction():
        with database.atomic():
            yield
        return
    if not is_sqlite():
        with database.atomic():
            yield
        return
    with _writer, database.atomic("IMMEDIATE"):
        yield


@contextmanager
def connection() -> Iterator[None]:
    """A connection for the length of a request, a job or a CLI command."""
    opened = database.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if opened and not database.is_closed():
            database.close()

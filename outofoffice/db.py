"""The database handle: created unbound here, bound to the configured database at start.

SQLite runs with WAL, foreign keys, a busy timeout and synchronous=FULL: a queued
email to a vendor is a promise to a caller and must survive a power cut.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import peewee
from playhouse.pool import PooledSqliteDatabase

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
        # A pool: a request's close() hands its connection back instead of closing the
        # file, which would cost a connect and its pragmas, and, when it was the last
        # connection, a full WAL checkpoint with its fsyncs on every request.
        # The pool hands a connection to one thread at a time, so it may move threads.
        return PooledSqliteDatabase(
            str(path),
            pragmas=SQLITE_PRAGMAS,
            max_connections=64,
            stale_timeout=600,
            check_same_thread=False,
        )
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
        if database.obj:
            close_all()
        database.initialize(real)
    return database.obj


def close_all() -> None:
    """Close every connection, pooled ones included, before binding another database."""
    if not database.obj.is_closed():
        database.obj.close()
    if hasattr(database.obj, "close_all"):
        database.obj.close_all()


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


# --- the hot path ---------------------------------------------------------------------
# peewee builds SQL text anew for every query, and on a busy routing page that costs
# more than SQLite itself. The few statements every request runs keep their text.

_inserts: dict[tuple, str] = {}


def sql(text: str) -> str:
    """A statement written with ? placeholders, in the bound database's style."""
    if is_sqlite():
        return text
    return text.replace(" IS ?", " IS NOT DISTINCT FROM ?").replace("?", database.param)


def insert(model: type[peewee.Model], **values) -> int:
    """INSERT one row (field defaults applied, values converted as peewee would);
    returns its id. The statement text is built once per model and column set."""
    meta = model._meta
    for field, default in meta.defaults.items():
        if field.name not in values:
            values[field.name] = default() if callable(default) else default
    if not is_sqlite():
        return model.insert(**values).execute()
    key = (model, tuple(values))
    text = _inserts.get(key)
    if text is None:
        columns = ", ".join(f'"{meta.fields[name].column_name}"' for name in values)
        marks = ", ".join("?" * len(values))
        # names from the schema, never from input
        text = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({marks})'  # noqa: S608
        _inserts[key] = text
    params = [meta.fields[name].db_value(value) for name, value in values.items()]
    return database.execute_sql(text, params).lastrowid


def first(model: type[peewee.Model], text: str, *params):
    """The first row of a fixed SELECT (written with ? placeholders) as a model, or None."""
    return next(iter(model.raw(sql(text), *params)), None)


_ID = re.compile(r"[0-9]{1,18}")


def parse_id(raw) -> int | None:
    """A row id from a URL or form: ASCII digits that fit a 64-bit column, else None
    (so "²", "-1" or a hundred digits are "not found", never a crash)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        return None
    return int(raw)

"""The database handle: created unbound here, bound to the configured database at start.

SQLite runs with WAL, foreign keys, a busy timeout and synchronous=FULL: a queued
email to a vendor is a promise to a caller and must survive a power cut.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import select
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import peewee
from playhouse.pool import PooledSqliteDatabase

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from outofoffice.config import Config

log = logging.getLogger(__name__)

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


def _postgresql(config: Config) -> peewee.Database:
    """A pool of ``[storage] pool_size`` connections; the password from the URL or
    ``[storage] password`` (``password_file``)."""
    try:
        import psycopg2  # noqa: F401  (the driver; peewee only says "improperly configured")
        from playhouse.pool import PooledPostgresqlDatabase
    except ImportError:
        raise DatabaseError(
            "PostgreSQL needs the psycopg2 driver: apt install python3-psycopg2, or "
            "pip install 'outofoffice[postgresql]'"
        ) from None
    parts = urlsplit(config.database_url)
    name = unquote(parts.path.lstrip("/"))
    if not name or "/" in name:
        raise DatabaseError("the URL must name one database: postgresql://USER@HOST/DB")
    params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if parts.username:
        params["user"] = unquote(parts.username)
    password = unquote(parts.password) if parts.password else config.storage.password
    if password:
        params["password"] = password
    if parts.hostname:
        params["host"] = parts.hostname
    if parts.port:
        params["port"] = parts.port
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "outofoffice")
    return PooledPostgresqlDatabase(
        name,
        max_connections=config.storage.pool_size,
        stale_timeout=300,
        timeout=10,  # a request waits this long for a free connection, then gets a 503
        **params,
    )


def _sqlite(url: str) -> peewee.Database:
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


def connect(config: Config) -> peewee.Database:
    url = config.database_url
    if url.startswith("sqlite:///"):
        return _sqlite(url)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgresql(config)
    raise DatabaseError(f"unsupported database URL {config.database_display!r}")


def _same(a: peewee.Database, b: peewee.Database) -> bool:
    return type(a) is type(b) and a.database == b.database and a.connect_params == b.connect_params


def bind(config: Config) -> peewee.Database:
    """Point the shared handle at the configured database (once per process or test)."""
    real = connect(config)
    if not database.obj or not _same(database.obj, real):
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


# --- many processes: what SQLite gets from its one writer, PostgreSQL gets from locks ---


def _lock_key(*name) -> int:
    """A stable 64-bit advisory-lock number for a name (the same on every machine)."""
    digest = hashlib.blake2b(repr(name).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock(*names: tuple) -> None:
    """Hold named locks until the transaction ends, so a read-then-write on them (is
    this a repeat? is the firm over its limit?) is one at a time across every process
    and machine; one round trip for all. Each name is a tuple; take them in the same
    order everywhere. On SQLite the write transaction already shuts out every other
    writer."""
    assert database.in_transaction(), "db.lock() holds until a transaction ends: use db.write()"
    if not is_sqlite() and names:
        calls = ", ".join(["pg_advisory_xact_lock(%s)"] * len(names))
        database.execute_sql(f"SELECT {calls}", [_lock_key(*name) for name in names])


def locked(model: type[peewee.Model], row_id: int, skip_locked: bool = False):
    """The row re-read under a row lock, inside the caller's transaction: what it says
    stays true until the commit. ``skip_locked``: None if another process holds it."""
    table = model._meta.table_name  # from the schema, never from input
    text = f'SELECT * FROM "{table}" WHERE "id" = ?'  # noqa: S608
    if not is_sqlite():
        text += " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
    return first(model, text, row_id)


@contextmanager
def singleton(name: str, wait: bool = False) -> Iterator[bool]:
    """Whether this process runs a once-per-installation job (a sweep, the digests, the
    migrations) now; on PostgreSQL an advisory lock held on this connection for the
    block. ``wait``: queue for it instead of skipping. On SQLite one scheduler per data
    dir (the lock file) already makes every job a singleton."""
    if is_sqlite():
        yield True
        return
    key = _lock_key("singleton", name)
    if wait:
        database.execute_sql("SELECT pg_advisory_lock(%s)", (key,))
        held = True
    else:
        held = database.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
    try:
        yield held
    finally:
        if held:
            try:
                database.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))
            except (peewee.OperationalError, peewee.InterfaceError, peewee.InternalError) as exc:
                # the connection broke: the lock went with its session
                log.warning("could not release the %s lock: %s", name, type(exc).__name__)


NOTIFY_CHANNEL = "outofoffice_outbox"


def notify() -> None:
    """Wake every delivering process (PostgreSQL; inside a transaction the notice goes
    at the commit). Polling stays the fallback."""
    if is_sqlite():
        return
    try:
        database.execute_sql(f"NOTIFY {NOTIFY_CHANNEL}")
    except peewee.DatabaseError:
        if not database.in_transaction():
            database.rollback()  # leave the connection fit for the rest of the request
        raise


class Listener(threading.Thread):
    """LISTENs on a connection of its own (outside the pool) and calls ``wake`` for
    each notice; after a lost connection it connects again and wakes once, for what
    was queued meanwhile."""

    def __init__(self, wake: Callable[[], None]):
        super().__init__(name="listen", daemon=True)
        self.wake = wake
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg2

        pool = database.obj
        while not self.stopping.is_set():
            conn = None
            try:
                conn = psycopg2.connect(dbname=pool.database, **pool.connect_params)
                conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.wake()
                while not self.stopping.is_set():
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self.wake()
            except psycopg2.Error as exc:
                log.warning("listening for new mail failed (polling goes on): %s", exc)
                self.stopping.wait(2)
            finally:
                if conn is not None:
                    conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def vacuum(models: list[type[peewee.Model]]) -> None:
    """Make deleted rows' bytes go: on SQLite secure_delete overwrote them and the WAL is
    truncated; on PostgreSQL VACUUM frees the dead row versions for reuse."""
    if is_sqlite():
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    conn = database.connection()
    conn.commit()  # VACUUM runs outside a transaction; older peewee leaves a read open
    autocommit, conn.autocommit = conn.autocommit, True
    try:
        with conn.cursor() as cursor:
            for model in models:
                cursor.execute(f'VACUUM "{model._meta.table_name}"')
    finally:
        conn.autocommit = autocommit


def server_version() -> str:
    """ "SQLite 3.40.1" or "PostgreSQL 15.18", for `check`."""
    if is_sqlite():
        return "SQLite " + database.execute_sql("SELECT sqlite_version()").fetchone()[0]
    return "PostgreSQL " + database.execute_sql("SHOW server_version").fetchone()[0].split()[0]


def is_disconnect(exc: BaseException) -> bool:
    """A database that is down, restarting, locked or out of free connections: the
    page says "try again"."""
    from playhouse.pool import MaxConnectionsExceeded

    return isinstance(exc, (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded))


def drop_idle() -> None:
    """After a lost connection, the idle ones in the pool are most likely dead too (the
    server restarted): close them, so the next request connects afresh."""
    pool = database.obj
    if hasattr(pool, "close_idle"):
        pool.close_idle()


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
    sqlite = is_sqlite()
    key = (model, tuple(values), sqlite)
    text = _inserts.get(key)
    if text is None:
        columns = ", ".join(f'"{meta.fields[name].column_name}"' for name in values)
        marks = ", ".join("?" * len(values))
        # names from the schema, never from input
        text = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({marks})'  # noqa: S608
        text = text if sqlite else sql(text) + ' RETURNING "id"'
        _inserts[key] = text
    params = [meta.fields[name].db_value(value) for name, value in values.items()]
    cursor = database.execute_sql(text, params)
    return cursor.lastrowid if sqlite else cursor.fetchone()[0]


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

"""The database handle: created unbound here, bound to the configured database at start.

SQLite runs with WAL, foreign keys, a busy timeout and synchronous=FULL: a queued
email to a vendor is a promise to a caller and must survive a power cut. A write that
cannot be made (the write lock held too long, a full or failing disk) ends in
``Unavailable`` with the cause, so a page can tell the caller to phone instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import select
import socket
import sqlite3
import threading
import time
import traceback
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
    "busy_timeout": 5_000,  # [storage] write_wait_seconds replaces it
    "synchronous": 2,  # FULL
    "secure_delete": 1,  # deleted personal data is overwritten, not left in free pages
    # The write-ahead log is copied into the database every 1,000 pages (4 MiB) and then
    # starts over; after a longer excursion (a backup's long read holds the copy back)
    # it is cut back to 8 MiB, so it never keeps more than that of the disk for good.
    "wal_autocheckpoint": 1_000,
    "journal_size_limit": 8 * 1024 * 1024,
}


class DatabaseError(Exception):
    """The configured database cannot be opened."""


class Unavailable(peewee.OperationalError):
    """A write could not be made now: the write lock stayed busy for [storage]
    write_wait_seconds, or the disk is full or failing. ``str()`` is the cause in an
    admin's words (never a value from the rows); ``cause`` a short name for it. An
    OperationalError still, so code that already catches those keeps doing so."""

    def __init__(self, reason: str, cause: str = "lock"):
        super().__init__(reason)
        self.reason, self.cause = reason, cause

    def __str__(self) -> str:
        return self.reason


STUCK_SECONDS = 0.5  # a write queued longer than this: the writes ahead are stuck


class WriterLock:
    """The write lock every process on one SQLite file takes before SQLite's own: a
    flock on a file beside the database. A writer of another process waits for it in
    the kernel and goes the moment it is let go, instead of in SQLite's busy handler,
    which retries in sleeps of up to 100 ms (with two busy processes, most of a write's
    time). The kernel lets go of it when its process dies. The process's WriteQueue
    lets one thread at a time ask for it."""

    def __init__(self, path: Path):
        self.path = path
        self._held: int | None = None  # the descriptor that holds it while a write runs
        self._waiter: _LockWaiter | None = None  # one in the kernel's queue, if any

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise Unavailable(f"cannot open {self.path.name}: {exc.strerror}") from None

    def acquire(self, timeout: float) -> bool:
        """False when it was not free within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self._waiter is not None and self._waiter.finished:
                self._waiter = None  # it got the lock when nobody wanted it, and let go
            if self._waiter is None:  # nobody waits already: perhaps it is free
                fd = self._open()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    try:
                        self._waiter = _LockWaiter(fd)
                    except BaseException:
                        os.close(fd)
                        raise
                except BaseException:
                    os.close(fd)
                    raise
                else:
                    self._held = fd
                    return True
            waiter = self._waiter
            if waiter.wait(deadline - time.monotonic()):
                self._waiter, self._held = None, waiter.fd
                return True
            if not waiter.finished or time.monotonic() >= deadline:
                return False

    def release(self) -> None:
        fd, self._held = self._held, None
        if fd is not None:
            os.close(fd)


class _LockWaiter:
    """A thread waiting in the kernel's queue for the lock, so that a write's wait can
    end at its deadline: the next write waits on the same thread (at most one per
    process, whatever the other process does), and one that gets the lock when nobody
    wants it any more lets go at once (closing its descriptor does)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.finished = False
        self._got = threading.Event()
        self._guard = threading.Lock()
        self._wanted = True
        threading.Thread(target=self._run, name="sqlite-writer-lock", daemon=True).start()

    def _run(self) -> None:
        taken = False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            taken = True
        finally:
            with self._guard:
                if taken and self._wanted:
                    self._got.set()
                else:
                    os.close(self.fd)
                    self.finished = True

    def wait(self, timeout: float) -> bool:
        with self._guard:
            if self.finished:
                return False
            self._wanted = True
        if self._got.wait(max(0.0, timeout)):
            return True
        with self._guard:
            if self._got.is_set():
                return True
            self._wanted = False
        return False


class WriteQueue:
    """The writers of one process on one SQLite database: one at a time (SQLite has one
    writer, and its busy handler polls in sleeps of up to 100 ms, so threads queue on a
    lock of their own first), each for at most ``wait`` seconds in all, and at most
    ``room`` of them at once. Beyond that a writer waits for a place only while the
    writes ahead still move; once the oldest has waited STUCK_SECONDS (another process
    holds the write lock), it is refused at once, so the other request threads stay
    free for pages that only read."""

    def __init__(self, wait: float, room: int, across: WriterLock | None = None):
        self.wait, self.room = wait, room
        self.across = across  # the other processes' writers (SQLite)
        self._turn = threading.Lock()
        self._room = threading.Condition()
        self._inside: dict[object, float] = {}  # each write waiting or writing: since when

    @contextmanager
    def turn(self) -> Iterator[float]:
        """This thread's turn to write; yields the moment (time.monotonic()) by which
        its transaction must have begun."""
        deadline = time.monotonic() + self.wait
        place = self._enter(deadline)
        try:
            if not self._turn.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise Unavailable(self._queued())
            try:
                if self.across and not self.across.acquire(deadline - time.monotonic()):
                    raise Unavailable(
                        f"another process of this installation held the database's write "
                        f"lock for {self.wait:g} s ([storage] write_wait_seconds)"
                    )
                try:
                    if deadline - time.monotonic() < 0.01:
                        raise Unavailable(self._queued())
                    yield deadline
                finally:
                    if self.across:
                        self.across.release()
            finally:
                self._turn.release()
        finally:
            with self._room:
                del self._inside[place]
                self._room.notify()

    def _enter(self, deadline: float) -> object:
        place = object()
        with self._room:
            while len(self._inside) >= self.room:
                stuck = min(self._inside.values()) + STUCK_SECONDS
                left = min(stuck, deadline) - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        f"the database's write lock is busy and {len(self._inside)} writes of "
                        "this process wait for it already, the most [server] threads leaves "
                        "room for (the other threads stay free for pages that only read)"
                    )
                self._room.wait(left)
            self._inside[place] = time.monotonic()
        return place

    def _queued(self) -> str:
        return (
            f"the database's write lock stayed busy for {self.wait:g} s ([storage] "
            "write_wait_seconds) while this process's writes queued for it"
        )


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


def _sqlite(url: str, wait: int) -> peewee.Database:
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_private(path)
    # A pool: a request's close() hands its connection back instead of closing the
    # file, which would cost a connect and its pragmas, and, when it was the last
    # connection, a full WAL checkpoint with its fsyncs on every request.
    # The pool hands a connection to one thread at a time, so it may move threads.
    return PooledSqliteDatabase(
        str(path),
        pragmas=SQLITE_PRAGMAS | {"busy_timeout": wait * 1000},
        timeout=wait,
        max_connections=64,
        stale_timeout=600,
        check_same_thread=False,
    )


def connect(config: Config) -> peewee.Database:
    """A database for the config, with its process's queue of writers (``.writes``):
    up to [server] threads less two of them wait, at most [storage] write_wait_seconds."""
    url = config.database_url
    wait = config.storage.write_wait_seconds
    if url.startswith("sqlite:///"):
        real = _sqlite(url, wait)
    elif url.startswith(("postgresql://", "postgres://")):
        real = _postgresql(config)
    else:
        raise DatabaseError(f"unsupported database URL {config.database_display!r}")
    across = WriterLock(Path(real.database + "-writer.lock")) if url.startswith("sqlite") else None
    real.writes = WriteQueue(wait, max(1, config.server.threads - 2), across)
    return real


def _same(a: peewee.Database, b: peewee.Database) -> bool:
    return type(a) is type(b) and a.database == b.database and a.connect_params == b.connect_params


def bind(config: Config) -> peewee.Database:
    """Point the shared handle at the configured database (once per process or test)."""
    real = connect(config)
    if not database.obj or not _same(database.obj, real):
        if database.obj:
            close_all()
        database.initialize(real)
    else:  # the same database again: its queue stays (a writer may be in it), its limits follow
        database.obj.writes.wait, database.obj.writes.room = real.writes.wait, real.writes.room
    return database.obj


def close_all() -> None:
    """Close every connection, pooled ones included, before binding another database."""
    if not database.obj.is_closed():
        database.obj.close()
    if hasattr(database.obj, "close_all"):
        database.obj.close_all()


def is_sqlite() -> bool:
    return isinstance(database.obj, peewee.SqliteDatabase)


@contextmanager
def write() -> Iterator[None]:
    """A write transaction; inside another one it joins it. On SQLite it takes the
    write lock up front (BEGIN IMMEDIATE), so two writers wait for each other instead of
    failing on upgrade, after its turn in this process's WriteQueue; the whole wait is
    at most [storage] write_wait_seconds. A write the database refuses for a fault
    (lock, full or failing disk, read-only) raises Unavailable with the cause."""
    if database.in_transaction():
        with database.atomic():
            yield
        return
    if not is_sqlite():
        with faults_named(), database.atomic():
            yield
        return
    writes = database.obj.writes
    with writes.turn() as deadline, faults_named():
        left = deadline - time.monotonic()
        lowered = left < writes.wait - 0.05  # queued behind another write of ours
        if lowered:
            _busy_timeout(int(left * 1000))
        try:
            with database.atomic("IMMEDIATE"):
                if lowered:
                    lowered = False
                    _busy_timeout(int(writes.wait * 1000))
                yield
        finally:
            if lowered and not database.is_closed():
                _busy_timeout(int(writes.wait * 1000))


def _busy_timeout(ms: int) -> None:
    database.execute_sql(f"PRAGMA busy_timeout = {int(ms)}")


# SQLite's result codes (Python 3.11 names them) and PostgreSQL's SQLSTATEs that mean
# the database cannot take a write now, whatever the statement was.
SQLITE_FAULTS = {
    "SQLITE_BUSY": "lock",
    "SQLITE_LOCKED": "lock",
    "SQLITE_FULL": "disk_full",
    "SQLITE_IOERR": "disk_error",
    "SQLITE_READONLY": "read_only",
    "SQLITE_CANTOPEN": "cannot_open",
    "SQLITE_CORRUPT": "damaged",
}
SQLITE_TEXTS = {  # older Pythons' errors carry only the text
    "database is locked": "lock",
    "database table is locked": "lock",
    "database or disk is full": "disk_full",
    "disk i/o error": "disk_error",
    "attempt to write a readonly database": "read_only",
    "unable to open database file": "cannot_open",
    "database disk image is malformed": "damaged",
}
POSTGRESQL_FAULTS = {
    "53100": "disk_full",  # disk_full
    "58030": "disk_error",  # io_error
    "55P03": "lock",  # lock_not_available (lock_timeout)
    "57014": "timeout",  # query_canceled (statement_timeout)
    "25006": "read_only",  # read_only_sql_transaction (a standby)
}


def _reason(cause: str) -> str:
    """The cause in an admin's words, naming the database file or server."""
    if is_sqlite():
        where = database.obj.database
        wait = database.obj.writes.wait
        return {
            "lock": f"the database's write lock is held by another process (waited {wait:g} "
            "s, [storage] write_wait_seconds): a backup, a sqlite3 shell, another serve?",
            "disk_full": f"the disk holding the database {where} is full",
            "disk_error": f"the disk holding the database {where} fails to read or write "
            "(disk I/O error)",
            "read_only": f"the database {where} cannot be written (read-only file, folder "
            "or file system)",
            "cannot_open": f"the database {where} cannot be opened (its folder is gone, or "
            "this process has too many files open)",
            "damaged": f"the database {where} is damaged (malformed): restore it from a backup",
        }[cause]
    return {
        "lock": "a lock in PostgreSQL stayed held longer than its lock_timeout allows",
        "timeout": "a statement ran longer than PostgreSQL's statement_timeout, or was cancelled",
        "disk_full": "the PostgreSQL server's disk is full",
        "disk_error": "the PostgreSQL server fails to read or write its disk (I/O error)",
        "read_only": "PostgreSQL refuses writes (a standby, or default_transaction_read_only)",
    }[cause]


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _in_rollback(exc: BaseException) -> bool:
    return any(
        frame.f_code.co_name == "rollback" for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def original_error(exc: BaseException) -> BaseException:
    """The error that ended a transaction, not a rollback that failed after it: SQLite
    rolls back by itself on a full disk, and peewee's own ROLLBACK then raises "cannot
    rollback - no transaction is active", which would hide "database or disk is full"."""
    for found in _chain(exc):
        if not _in_rollback(found):
            return found
    return exc


def fault_of(exc: BaseException) -> str | None:
    """The fault a database error means ("lock", "disk_full", ...), or None for an
    error of the statement itself (a bug, a constraint)."""
    for found in _chain(exc):
        name = getattr(found, "sqlite_errorname", "") or ""
        if name:
            return SQLITE_FAULTS.get(name) or SQLITE_FAULTS.get("_".join(name.split("_")[:2]))
        code = getattr(found, "pgcode", None)
        if code:
            return POSTGRESQL_FAULTS.get(code)
        text = str(found).strip().lower()
        if text in SQLITE_TEXTS:
            return SQLITE_TEXTS[text]
    return None


@contextmanager
def faults_named() -> Iterator[None]:
    """Raise the error that ended the write, never a failed rollback after it; a fault
    of the database as Unavailable with its cause."""
    try:
        yield
    except Unavailable:
        raise
    except BaseException as exc:
        original = original_error(exc)
        let_go_of_cursors(exc)
        _leave_no_transaction()
        cause = fault_of(original) if isinstance(original, peewee.DatabaseError) else None
        if cause is not None:
            raise Unavailable(_reason(cause), cause) from original
        if original is exc:
            raise
        raise original from original.__cause__


def let_go_of_cursors(exc: BaseException) -> None:
    """Drop the local variables of the finished frames a database error passed through
    (its traceback stays): they hold the failed statement's cursor, and a cursor left
    for the garbage collector is reset by whichever thread collects it, holding the
    GIL while it waits for the connection, which by then another thread may be using
    for a write that waits for the lock: every thread of the process stood still."""
    chain = list(_chain(exc))
    if any(isinstance(found, (peewee.DatabaseError, sqlite3.Error)) for found in chain):
        for found in chain:
            traceback.clear_frames(found.__traceback__)


def _leave_no_transaction() -> None:
    """A connection must not go back to the pool inside a transaction (it would hold
    SQLite's write lock for good): roll back what SQLite left open, or close it."""
    if not is_sqlite() or database.is_closed():
        return
    conn = database.connection()
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except Exception as exc:  # the disk fails: this connection goes, the pool makes another
        log.warning("closing a database connection that could not roll back: %s", exc)
        database.manual_close()


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


# On SQLite the one delivering process takes wakes on a datagram socket beside the
# database (the scheduler's lock file makes it the only one bound there).
WAKE_SUFFIX = "-wake.sock"


def notify() -> None:
    """Wake every delivering process: on PostgreSQL a NOTIFY (inside a transaction it
    goes at the commit), on SQLite a datagram to the scheduler's socket. Polling stays
    the fallback."""
    if is_sqlite():
        _send_wake(_wake_path())
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


def _wake_path() -> Path:
    return Path(database.obj.database + WAKE_SUFFIX)


@contextmanager
def _socket_name(path: Path) -> Iterator[str]:
    """path as a socket address that fits in 108 bytes however deep its folder is:
    through the folder's /proc/self/fd entry."""
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def _send_wake(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, _socket_name(path) as name:
        sock.setblocking(False)
        try:
            sock.sendto(b"!", name)
        except (FileNotFoundError, ConnectionRefusedError, BlockingIOError):
            return  # no scheduler runs (it looks when it starts) or a wake waits for it


class WakeSocket(threading.Thread):
    """SQLite's Listener: the scheduler's socket beside the database, where the other
    processes of the installation (web processes, commands) say that they queued
    messages; one wake for each burst of them."""

    def __init__(self, wake: Callable[[], None]):
        super().__init__(name="listen", daemon=True)
        self.wake = wake
        self.path = _wake_path()
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with _socket_name(self.path) as name:
                self.path.unlink(missing_ok=True)  # a stopped scheduler's: this one holds the lock
                self.sock.bind(name)
        except Exception:
            self.sock.close()
            raise

    def run(self) -> None:
        while True:
            self.sock.recv(16)
            if self.stopping.is_set():
                return
            try:
                # the rest of the burst (after stop() recv answers b"" at once)
                while self.sock.recv(16, socket.MSG_DONTWAIT) or not self.stopping.is_set():
                    continue
            except BlockingIOError:
                self.wake()

    def stop(self) -> None:
        self.stopping.set()
        self.sock.shutdown(socket.SHUT_RDWR)  # its recv returns
        self.join(timeout=5)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def listener(wake: Callable[[], None]) -> Listener | WakeSocket | None:
    """What wakes this process's scheduler when another process queues a message; None
    when SQLite's socket cannot be made (the scheduler polls, as before)."""
    if not is_sqlite():
        return Listener(wake)
    try:
        return WakeSocket(wake)
    except (OSError, AttributeError) as exc:  # AttributeError: no O_PATH (not Linux)
        log.warning("other processes cannot wake the scheduler (it polls): %s", exc)
        return None


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


# names from the code, never from input; {row} is NEW or OLD, {start} a random count
# to begin from, so an account made again under a freed id (SQLite reuses the highest)
# never meets the pages cached for the one before it
COUNT_CHANGE = (
    'INSERT INTO "{counter}" ("account_id", "version") '
    'SELECT "id", {start} FROM "account" WHERE "id" = {row}."{column}" '
    'ON CONFLICT ("account_id") DO UPDATE SET "version" = "{counter}"."version" + 1'
)
RANDOM_START = {
    "sqlite": "(random() & 4611686018427387903)",
    "postgresql": "(random() * 4611686018427387903)::bigint",
}


def count_changes(table: str, counter: str, column: str = "account_id") -> None:
    """Triggers that add one to the ``counter`` table's row for the account (named by
    the row's ``column``) whenever a row of ``table`` is inserted, changed or deleted,
    whoever writes it. No row is made for an account being deleted (the SELECT finds
    no account)."""
    start = RANDOM_START["sqlite" if is_sqlite() else "postgresql"]
    bump = (
        COUNT_CHANGE.replace("{counter}", counter)
        .replace("{column}", column)
        .replace("{start}", start)
    )
    if is_sqlite():
        for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            database.execute_sql(
                f'CREATE TRIGGER IF NOT EXISTS "{table}_{counter}_{event.lower()}" '
                f'AFTER {event} ON "{table}" BEGIN {bump.format(row=row)}; END'
            )
        return
    function = f"{table}_{counter}"
    database.execute_sql(
        f'CREATE OR REPLACE FUNCTION "{function}"() RETURNS trigger AS $$ '
        "BEGIN IF TG_OP = 'DELETE' THEN "
        f"{bump.format(row='OLD')}; ELSE {bump.format(row='NEW')}; END IF; "
        "RETURN NULL; END $$ LANGUAGE plpgsql"
    )
    database.execute_sql(
        f'CREATE OR REPLACE TRIGGER "{function}" AFTER INSERT OR UPDATE OR DELETE '
        f'ON "{table}" FOR EACH ROW EXECUTE FUNCTION "{function}"()'
    )


def server_version() -> str:
    """ "SQLite 3.40.1" or "PostgreSQL 15.18", for `check`."""
    if is_sqlite():
        return "SQLite " + database.execute_sql("SELECT sqlite_version()").fetchone()[0]
    return "PostgreSQL " + database.execute_sql("SHOW server_version").fetchone()[0].split()[0]


# PostgreSQL's error classes that say the server, not the statement: connection lost,
# out of resources, shut down by its operator, system errors
POSTGRESQL_AWAY_CLASSES = ("08", "53", "57", "58")


def is_away(exc: BaseException) -> bool:
    """The database refuses or cannot be reached now, worth a 503 and another try soon
    (a held lock, a full disk, a restart), rather than refusing this statement (a bug,
    which should surface as one)."""
    if isinstance(exc, Unavailable) or fault_of(exc) is not None:
        return True
    if not is_disconnect(exc) or is_sqlite():
        return False
    codes = [getattr(found, "pgcode", None) for found in _chain(exc)]
    return all(code is None or code[:2] in POSTGRESQL_AWAY_CLASSES for code in codes)


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
    returns its id."""
    meta = model._meta
    for field, default in meta.defaults.items():
        if field.name not in values:
            values[field.name] = default() if callable(default) else default
    params = [meta.fields[name].db_value(value) for name, value in values.items()]
    cursor = database.execute_sql(_insert_text(meta, tuple(values), 1, returning=True), params)
    return cursor.lastrowid if is_sqlite() else cursor.fetchone()[0]


def insert_many(model: type[peewee.Model], rows: list[dict]) -> None:
    """INSERT rows that name the same columns in one statement."""
    meta = model._meta
    names = tuple(rows[0])
    fields = [meta.fields[name] for name in names]
    params = [field.db_value(r[field.name]) for r in rows for field in fields]
    database.execute_sql(_insert_text(meta, names, len(rows), returning=False), params)


def _insert_text(meta, names: tuple[str, ...], count: int, returning: bool) -> str:
    """The INSERT of count rows of these columns, built once per table, column set and
    number of rows."""
    sqlite = is_sqlite()
    key = (meta.table_name, names, count, returning, sqlite)
    text = _inserts.get(key)
    if text is None:
        columns = ", ".join(f'"{meta.fields[name].column_name}"' for name in names)
        row = "(" + ", ".join("?" * len(names)) + ")"
        # names from the schema, never from input
        text = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ' + ", ".join(  # noqa: S608
            [row] * count
        )
        if not sqlite:
            text = sql(text) + (' RETURNING "id"' if returning else "")
        _inserts[key] = text
    return text


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

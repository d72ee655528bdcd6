"""Moving to a new secret key: add it, then re-encrypt everything stored under an older
one. Older keys stay in the key file: links they signed keep working until they
expire, and a process started before the rotation still reads what it wrote.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from outofoffice import db, keys
from outofoffice.config import Config
from outofoffice.instance import record_key
from outofoffice.models import Dispatch, MagicLink, OutboxMessage, WebhookEndpoint

# Every encrypted column, and which rows hold ciphertext there (an email's recipient
# is an address, which may begin "v1." too).
ENCRYPTED = (
    (Dispatch, ("caller_name", "caller_phone", "description"), None),
    (OutboxMessage, ("body_text", "body_html"), None),
    (OutboxMessage, ("recipient",), OutboxMessage.channel == "sms"),
    (MagicLink, ("payload",), None),
    (WebhookEndpoint, ("secret",), None),
)
BATCH = 200


def rotate(config: Config, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Add a new key and re-encrypt every value; returns how many rows per table, and
    progress(done, total) counts rows looked at. One rotation at a time: two at once
    could lose a key."""
    with _only_rotation(config):
        return _rotate(config, progress or (lambda done, total: None))


@contextmanager
def _only_rotation(config: Config) -> Iterator[None]:
    """On PostgreSQL an advisory lock, which every machine sees; on SQLite a lock beside
    the key file."""
    busy = keys.KeyFileError("another rotate-key is running")
    if not db.is_sqlite():
        with db.singleton("rotate-key") as mine:
            if not mine:
                raise busy
            yield
        return
    lock_path = config.secret_key_path.with_name(config.secret_key_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise busy from None
    try:
        yield
    finally:
        os.close(fd)


def _rotate(config: Config, progress: Callable[[int, int], None]) -> dict[str, int]:
    keys.add_key(config.secret_key_path)
    current = keys.Keys.load(config.secret_key_path)
    with db.write():
        record_key(current)  # processes started from now on need this newest key
    total = sum(_rows(model, where).count() for model, _, where in ENCRYPTED)
    counts, seen = {}, 0

    def looked_at(rows: int) -> None:
        nonlocal seen
        seen += rows
        progress(min(seen, total), total)

    for model, columns, where in ENCRYPTED:
        name = model._meta.table_name
        counts[name] = counts.get(name, 0) + _reencrypt(model, columns, where, current, looked_at)
    db.vacuum(list(dict.fromkeys(model for model, _, _ in ENCRYPTED)))  # old bytes go too
    return counts


def _rows(model, where):
    query = model.select()
    return query if where is None else query.where(where)


def _reencrypt(model, columns: tuple[str, ...], where, current: keys.Keys, looked_at) -> int:
    done, last_id = 0, 0
    while True:
        with db.write():
            rows = list(
                _rows(model, where).where(model.id > last_id).order_by(model.id).limit(BATCH)
            )
            for row in rows:
                changed = {}
                for column in columns:
                    value = getattr(row, column)
                    if (
                        isinstance(value, str)
                        and value.startswith("v1.")
                        and not current.is_current(value)
                    ):
                        changed[column] = current.encrypt(current.decrypt(value))
                if changed:
                    # only if unchanged meanwhile: a process that emptied a sent
                    # email's body, or used a link, keeps what it wrote
                    unchanged = [getattr(model, c) == getattr(row, c) for c in changed]
                    done += model.update(**changed).where(model.id == row.id, *unchanged).execute()
        looked_at(len(rows))
        if len(rows) < BATCH:
            return done
        last_id = rows[-1].id

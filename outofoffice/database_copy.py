"""`copy-database`: every row of this installation into another, empty database, with
the same ids, so that links already emailed (action links, status links, sign-in
links), sessions and queued mail keep working after a move from SQLite to PostgreSQL
(or back). The values are copied as stored: the same secret key reads them there."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import peewee

from outofoffice import db, migrations
from outofoffice.config import Config
from outofoffice.models import MODELS, OutboxMessage, PagesVersion, ProcessBeat

BATCH = 500
# Heartbeats describe the processes running now, not the installation's data; the
# pages' versions are counted afresh by the target's triggers as the rows arrive.
COPIED = [model for model in MODELS if model not in (ProcessBeat, PagesVersion)]


class CopyError(Exception):
    """The copy cannot start: the message says what to fix."""


# Claims belong to processes of the old installation: none of them runs there.
UNCLAIMED = {OutboxMessage.claimed_by, OutboxMessage.claimed_until}


def target_config(config: Config, url: str) -> Config:
    """The config with the target database; this one's password is not sent there (the
    target's comes from its URL, PGPASSWORD or ~/.pgpass)."""
    storage = dataclasses.replace(config.storage, database=url, password="")
    return dataclasses.replace(config, storage=storage)


def _where(database: peewee.Database) -> tuple:
    params = getattr(database, "connect_params", {})
    return type(database), database.database, params.get("host"), params.get("port")


def copy_database(
    config: Config, url: str, progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Copy every table (parents first) into the database at ``url``; returns the rows
    copied per table. The target gets this release's schema and must be empty."""
    progress = progress or (lambda done, total: None)
    source = db.database.obj
    try:
        target = db.connect(target_config(config, url))
    except db.DatabaseError as exc:
        raise CopyError(f"the target database: {exc}") from None
    if _where(target) == _where(source):
        raise CopyError("the target is the database this installation uses now")
    _prepare(target, source)
    total = sum(model.select().count() for model in COPIED)
    copied: dict[str, int] = {}
    done = 0
    for model in COPIED:
        copied[model._meta.table_name] = _copy_table(model, source, target)
        done += copied[model._meta.table_name]
        progress(done, total)
    if not isinstance(target, peewee.SqliteDatabase):
        _move_sequences(target)
    target.close()
    return copied


def _prepare(target: peewee.Database, source: peewee.Database) -> None:
    """This release's schema in the target, which must hold no rows yet."""
    db.database.initialize(target)  # the migrations work on the bound handle
    try:
        with db.connection():
            migrations.migrate()
            filled = [m._meta.table_name for m in COPIED if m.select().exists()]
            if filled:
                raise CopyError(
                    f"the target database is not empty ({', '.join(filled)}); give an empty one"
                )
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise CopyError(f"cannot open the target database: {exc}".strip()) from None
    finally:
        db.database.initialize(source)


def _copy_table(model: type[peewee.Model], source, target) -> int:
    fields = model._meta.sorted_fields
    cleared = [i for i, field in enumerate(fields) if field in UNCLAIMED]
    count, last = 0, 0
    while True:
        with source.bind_ctx([model], bind_refs=False, bind_backrefs=False):
            rows = list(
                model.select(*fields)
                .where(model.id > last)
                .order_by(model.id)
                .limit(BATCH)
                .tuples()
            )
        if not rows:
            return count
        last = rows[-1][0]
        if cleared:
            rows = [tuple(None if i in cleared else v for i, v in enumerate(r)) for r in rows]
        with target.bind_ctx([model], bind_refs=False, bind_backrefs=False), target.atomic():
            model.insert_many(rows, fields=fields).execute()
        count += len(rows)


def _move_sequences(target: peewee.Database) -> None:
    """Rows came with their ids: each id sequence continues after the highest."""
    for model in COPIED:
        table = model._meta.table_name  # from the schema, never from input
        target.execute_sql(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'),"  # noqa: S608
            f' COALESCE((SELECT MAX("id") FROM "{table}"), 0) + 1, false)'
        )

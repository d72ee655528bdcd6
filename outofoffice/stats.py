"""The figures an admin checks on a running box (`outofoffice stats`): how many firms
and requests there are, whether mail is backing up, and whether the sweep still runs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import peewee

from outofoffice import clock, db, heartbeat
from outofoffice.config import Config
from outofoffice.models import Account, Dispatch, JobRun, OutboxMessage
from outofoffice.portability import iso


def _by_status(model) -> dict[str, int]:
    rows = model.select(model.status, peewee.fn.COUNT(model.id)).group_by(model.status)
    return dict(sorted(rows.tuples()))


def collect(config: Config) -> dict:
    now = clock.now()
    queued = OutboxMessage.select().where(OutboxMessage.status == "queued")
    oldest = queued.select(peewee.fn.MIN(OutboxMessage.created_at)).scalar()
    sweep = JobRun.get_or_none(JobRun.job == "sweep")
    database = {"url": config.database_display}
    if db.is_sqlite():
        path = Path(db.database.database)
        database["bytes"] = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    else:
        database["bytes"] = db.database.execute_sql(
            "SELECT pg_database_size(current_database())"
        ).fetchone()[0]
    return {
        "accounts": _by_status(Account),
        "dispatches": _by_status(Dispatch),
        "dispatches_last_24h": Dispatch.select()
        .where(Dispatch.created_at > now - timedelta(hours=24))
        .count(),
        "outbox": {
            "queued": queued.count(),
            "oldest_queued_minutes": int((now - oldest).total_seconds() // 60) if oldest else None,
            "dead": OutboxMessage.select().where(OutboxMessage.status == "dead").count(),
        },
        "last_sweep": {"at": iso(sweep.finished_at), "removed": sweep.summary} if sweep else None,
        "database": database,
        "processes": [
            {
                "process": f"{p.host}:{p.pid}",
                "role": p.role,
                "last_beat": iso(p.beat_at),
                "started_at": iso(p.started_at),
            }
            for p in heartbeat.alive()
        ],
        "generated_at": iso(now),
    }

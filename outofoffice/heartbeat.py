"""Each process says it is alive: host, pid, role and when it last beat. With many
processes on many machines, /healthz and `outofoffice stats` read the installation's
state from here instead of from the one process they ask."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from outofoffice import clock, db
from outofoffice.models import ProcessBeat

log = logging.getLogger(__name__)

BEAT_SECONDS = 15
ALIVE = timedelta(seconds=60)  # four missed beats: that process is gone
FORGET = timedelta(days=1)  # rows of processes that died without saying so
SCHEDULER_ROLES = ("scheduler", "web+scheduler")


def identity() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


def beat(role: str, started_at: datetime) -> None:
    host, pid = identity()
    now = clock.now()
    with db.write():
        ProcessBeat.insert(
            host=host, pid=pid, role=role, started_at=started_at, beat_at=now
        ).on_conflict(
            conflict_target=[ProcessBeat.host, ProcessBeat.pid],
            update={ProcessBeat.role: role, ProcessBeat.beat_at: now},
        ).execute()


def forget_dead() -> int:
    with db.write():
        return ProcessBeat.delete().where(ProcessBeat.beat_at < clock.now() - FORGET).execute()


def leave() -> None:
    host, pid = identity()
    with db.write():
        ProcessBeat.delete().where(ProcessBeat.host == host, ProcessBeat.pid == pid).execute()


def alive() -> list[ProcessBeat]:
    """The processes that beat within the last minute, newest first."""
    since = clock.now() - ALIVE
    return list(
        ProcessBeat.select().where(ProcessBeat.beat_at > since).order_by(ProcessBeat.beat_at.desc())
    )


def delivering() -> list[ProcessBeat]:
    """Live processes that run the scheduler (they deliver and escalate)."""
    return [p for p in alive() if p.role in SCHEDULER_ROLES]


class Heartbeat(threading.Thread):
    """Beats every BEAT_SECONDS from its own thread; its row goes when it stops."""

    def __init__(self, role: str):
        super().__init__(name="heartbeat", daemon=True)
        self.role = role
        self.started_at = clock.now()
        self.stopping = threading.Event()

    def run(self) -> None:
        first = True
        while True:
            try:
                with db.connection():
                    beat(self.role, self.started_at)
                    if first:
                        forget_dead()
                        first = False
            except Exception as exc:  # the database is away: beat again later
                log.warning("heartbeat not recorded: %s", type(exc).__name__)
            if self.stopping.wait(BEAT_SECONDS):
                return

    def stop(self) -> None:
        self.stopping.set()
        try:
            with db.connection():
                leave()
        except Exception as exc:  # stopping anyway; the row ages out
            log.warning("could not remove this process's heartbeat: %s", type(exc).__name__)

"""Each process says it is alive: host, pid, role and when it last beat. With many
processes on many machines, /healthz and `outofoffice stats` read the installation's
state from here instead of from the one process they ask. A web process also says the
address it serves at, for the commands that print links when base_url is left out."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from outofoffice import clock, db
from outofoffice.models import ProcessBeat, Setting

log = logging.getLogger(__name__)

BEAT_SECONDS = 15
ALIVE = timedelta(seconds=60)  # four missed beats: that process is gone
FORGET = timedelta(days=1)  # rows of processes that died without saying so
SCHEDULER_ROLES = ("scheduler", "web+scheduler")


def identity() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


URL_PREFIX = "serves-at:"  # + the process row's id: a Setting naming its address


def _mine():
    host, pid = identity()
    return (ProcessBeat.host == host) & (ProcessBeat.pid == pid)


def beat(role: str, started_at: datetime, url: str = "") -> None:
    """Record this process as alive now; ``url`` is the address a web process serves at."""
    host, pid = identity()
    now = clock.now()
    with db.write():
        ProcessBeat.insert(
            host=host, pid=pid, role=role, started_at=started_at, beat_at=now
        ).on_conflict(
            conflict_target=[ProcessBeat.host, ProcessBeat.pid],
            update={ProcessBeat.role: role, ProcessBeat.beat_at: now},
        ).execute()
        if url:
            name = URL_PREFIX + str(ProcessBeat.select(ProcessBeat.id).where(_mine()).scalar())
            Setting.insert(name=name, value=url).on_conflict(
                conflict_target=[Setting.name], update={Setting.value: url}
            ).execute()


def forget_dead() -> int:
    with db.write():
        count = ProcessBeat.delete().where(ProcessBeat.beat_at < clock.now() - FORGET).execute()
        known = {URL_PREFIX + str(i) for (i,) in ProcessBeat.select(ProcessBeat.id).tuples()}
        gone = [
            name
            for (name,) in Setting.select(Setting.name)
            .where(Setting.name.startswith(URL_PREFIX))
            .tuples()
            if name not in known
        ]
        if gone:
            Setting.delete().where(Setting.name.in_(gone)).execute()
        return count


def leave() -> None:
    with db.write():
        mine = ProcessBeat.select(ProcessBeat.id).where(_mine()).tuples()
        names = [URL_PREFIX + str(i) for (i,) in mine]
        if names:
            Setting.delete().where(Setting.name.in_(names)).execute()
        ProcessBeat.delete().where(_mine()).execute()


def alive() -> list[ProcessBeat]:
    """The processes that beat within the last minute, newest first."""
    since = clock.now() - ALIVE
    return list(
        ProcessBeat.select().where(ProcessBeat.beat_at > since).order_by(ProcessBeat.beat_at.desc())
    )


def serving_url() -> str | None:
    """Where a live web process on this machine serves, newest first: a base_url left
    out is http://127.0.0.1:<port>, which only this machine can open."""
    host = identity()[0]
    for process in alive():
        if process.host != host or not process.role.startswith("web"):
            continue
        row = Setting.get_or_none(Setting.name == URL_PREFIX + str(process.id))
        if row is not None:
            return row.value
    return None


def delivering() -> list[ProcessBeat]:
    """Live processes that run the scheduler (they deliver and escalate)."""
    return [p for p in alive() if p.role in SCHEDULER_ROLES]


class Heartbeat(threading.Thread):
    """Beats every BEAT_SECONDS from its own thread; its row goes when it stops."""

    def __init__(self, role: str, url: str = ""):
        super().__init__(name="heartbeat", daemon=True)
        self.role = role
        self.url = url
        self.forgot = False  # forget_dead() ran: once per start is enough
        self.started_at = clock.now()
        self.stopping = threading.Event()

    def start(self) -> None:
        """The first beat before the process serves: a command run a moment later
        (`demo` beside a starting `serve`) finds it."""
        self._beat()
        super().start()

    def run(self) -> None:
        while not self.stopping.wait(BEAT_SECONDS):
            self._beat()

    def _beat(self) -> None:
        try:
            with db.connection():
                beat(self.role, self.started_at, self.url)
                if not self.forgot:
                    forget_dead()
                    self.forgot = True
        except Exception as exc:  # the database is away: beat again later
            log.warning("heartbeat not recorded: %s", type(exc).__name__)

    def stop(self) -> None:
        self.stopping.set()
        try:
            with db.connection():
                leave()
        except Exception as exc:  # stopping anyway; the row ages out
            log.warning("could not remove this process's heartbeat: %s", type(exc).__name__)

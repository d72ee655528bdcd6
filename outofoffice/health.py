"""The installation's health, for /healthz and `outofoffice check`: the facts (can the
database be read and written, does some process deliver, is mail getting through, how
long the oldest due message has waited, how much room the data folder has) and the
problems they add up to, each naming the ``[health]`` threshold it crossed.

A monitor polls /healthz every few seconds and anyone may call it, so the one write it
makes (a tiny Setting row, the only sure sign the database takes writes) runs at most
once per ``PROBE_EVERY`` per WriteProbe, waits at most ``PROBE_WAIT_SECONDS`` for the
write lock, and meanwhile its last result is reported with its age.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from outofoffice import clock, db, outbox, scheduler
from outofoffice.models import Setting

if TYPE_CHECKING:
    from outofoffice.config import Config

log = logging.getLogger(__name__)

PROBE_NAME = "health-probe"  # the Setting row the write probe updates
PROBE_WAIT_SECONDS = 1.0  # the longest the probe waits for the write lock
PROBE_EVERY = timedelta(seconds=3)  # /healthz writes at most this often per process
MIB = 1024 * 1024


@dataclass(frozen=True)
class Problem:
    """One fault. ``text`` is fit for the public /healthz (figures and config keys, no
    addresses, names or raw error text); ``advice`` is what `check` adds for the admin.
    ``kind``: database, database_writable, scheduler, mail, outbox or disk."""

    kind: str
    text: str
    advice: str


@dataclass(frozen=True)
class ProbeResult:
    writable: bool
    reason: str  # why not, in fixed words: never the error's own text
    at: datetime


# What a failed write probe found, in fixed words (the error's text only picks which),
# and what the admin does about it.
LOCKED = "another process holds the write lock"
FULL = "the disk is full"
READ_ONLY = "the database is read-only"
ADVICE = {
    LOCKED: "find what holds it (a sqlite3 shell, a script: `fuser` on the database file "
    "names it) and end it; until then nothing new is stored",
    FULL: "free space on the disk of the data folder (or the database server)",
    READ_ONLY: "the database file or folder, or the database server, refuses writes: "
    "check owners and modes, or whether it is a read-only replica",
}


FAULT_WORDS = {
    "lock": LOCKED,
    "disk_full": FULL,
    "read_only": READ_ONLY,
    "timeout": "a write took too long",
    "disk_error": "the disk reports errors",
}


def _why_not_written(exc: Exception) -> str:
    """Fixed words for the fault (db.fault_of reads the database's own error code),
    never the error's text, which may quote values."""
    if words := FAULT_WORDS.get(db.fault_of(db.original_error(exc)) or ""):
        return words
    text = str(exc).lower()
    if "locked" in text or "busy" in text or "lock timeout" in text:
        return LOCKED
    if "full" in text or "no space" in text or "could not extend" in text:
        return FULL
    if "readonly" in text or "read-only" in text:
        return READ_ONLY
    if "statement timeout" in text:
        return "a write took too long"
    return f"error: {type(exc).__name__}"


def _write_probe_row(now: datetime, wait: float) -> None:
    """Update one Setting row in a write transaction that waits at most ``wait``
    seconds: on SQLite BEGIN IMMEDIATE under a short busy timeout (this connection's
    usual one is restored after); on PostgreSQL under lock and statement timeouts."""
    database = db.database
    value = now.isoformat()
    upsert = Setting.insert(name=PROBE_NAME, value=value).on_conflict(
        conflict_target=[Setting.name], update={Setting.value: value}
    )
    millis = max(1, int(wait * 1000))
    if db.is_sqlite():
        usual = int(database.execute_sql("PRAGMA busy_timeout").fetchone()[0])
        database.execute_sql(f"PRAGMA busy_timeout = {millis}")
        try:
            with db.faults_named(), database.atomic("IMMEDIATE"):  # no transaction left open
                upsert.execute()
        finally:
            database.execute_sql(f"PRAGMA busy_timeout = {usual}")
        return
    with db.faults_named(), database.atomic():
        database.execute_sql(f"SET LOCAL lock_timeout = {millis}")
        database.execute_sql(f"SET LOCAL statement_timeout = {millis}")
        upsert.execute()


def probe_write(wait: float = PROBE_WAIT_SECONDS) -> ProbeResult:
    """One real, tiny write now: can the database take writes? The finding is dated
    when the probe ends, after any wait."""
    try:
        with db.connection():
            _write_probe_row(clock.now(), wait)
    except Exception as exc:  # any failure to write is the finding, never a crash
        db.let_go_of_cursors(exc)  # not for another thread's garbage collector to reset
        if db.is_disconnect(exc):
            db.drop_idle()
        return ProbeResult(False, _why_not_written(exc), clock.now())
    return ProbeResult(True, "", clock.now())


class WriteProbe:
    """The write probe, rate-limited: at most one write per ``every``; meanwhile the
    last result. One per web app (so per process), never shared beyond it. Threads
    that come while a probe runs get the last result at once rather than queue."""

    def __init__(self, every: timedelta = PROBE_EVERY, wait: float = PROBE_WAIT_SECONDS):
        self.every = every
        self.wait = wait
        self._last: ProbeResult | None = None
        self._lock = threading.Lock()

    def _fresh(self, result: ProbeResult | None) -> bool:
        return result is not None and timedelta(0) <= clock.now() - result.at < self.every

    def result(self) -> ProbeResult | None:
        """The last result if fresh, else a new one; None only while the very first
        probe runs in another thread for longer than its bound."""
        last = self._last
        if self._fresh(last):
            return last
        if last is None:
            taken = self._lock.acquire(timeout=self.wait + 1)
        else:
            taken = self._lock.acquire(blocking=False)
        if not taken:
            return self._last
        try:
            if self._fresh(self._last):
                return self._last
            result = probe_write(self.wait)
            previous = self._last
            if not result.writable and (previous is None or previous.writable):
                log.warning("health: the database cannot be written: %s", result.reason)
            elif result.writable and previous is not None and not previous.writable:
                log.info("health: the database takes writes again")
            self._last = result
            return result
        finally:
            self._lock.release()


@dataclass
class Report:
    """What /healthz shows and `check` prints."""

    database: str = "ok"  # "ok": it can be read; else "error: <kind of error>"
    database_writable: bool | None = None  # None: not known (it cannot be read)
    database_writable_age_seconds: int | None = None  # how old that finding is
    scheduler: str = ""
    outbox_backlog: int | None = None
    oldest_due_seconds: int | None = None  # how long the oldest due message has waited
    mail_failing_since: datetime | None = None  # naive UTC
    # the other channels the same way: "sms", "push" -> since when, naive UTC
    failing_since: dict[str, datetime] = field(default_factory=dict)
    free_mb: int | None = None  # MiB free on the data folder's file system
    low_space: bool = False  # under twice [health] min_free_mb: `check` warns
    problems: list[Problem] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def public(self) -> dict:
        """The /healthz JSON (docs/monitoring.md lists the fields)."""
        since = self.mail_failing_since
        return {
            "status": "ok" if self.healthy else "error",
            "database": self.database,
            "database_writable": self.database_writable,
            "database_writable_age_seconds": self.database_writable_age_seconds,
            "scheduler": self.scheduler,
            "outbox_backlog": self.outbox_backlog,
            "oldest_due_seconds": self.oldest_due_seconds,
            "mail_failing_since": _iso(since) if since else None,
            **{
                f"{channel}_failing_since": _iso(at) if at else None
                for channel in FAILING_CHANNELS
                for at in [self.failing_since.get(channel)]
            },
            "free_mb": self.free_mb,
            "problems": [p.text for p in self.problems],
        }


# Channels beside email whose provider may be down for the whole installation (each
# webhook endpoint fails on its own, and its owner sees that on the webhooks page).
FAILING_CHANNELS = {"sms": "SMS", "push": "push"}
CHANNEL_ADVICE = {
    "mail": "the relay or provider refuses or does not answer: the log has its answer, "
    "`outofoffice check --send-test-email ADDR` tries it now",
    "sms": "Twilio refuses or does not answer: the log has its answer, "
    "`outofoffice check --send-test-sms NUMBER` tries it now",
    "push": "the ntfy server refuses or does not answer: the log has its answer, "
    "`outofoffice check --send-test-push VENDOR_EMAIL` tries it now",
}


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))


def _duration(seconds: int) -> str:
    """75 s, 12 min, 5 h, 3 days: how people say how long."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def assess(config: Config, probe: WriteProbe | None = None) -> Report:
    """Gather the installation's facts and decide what is wrong. ``probe``: the web
    app's rate-limited one; without it (`check`) the write is tried now."""
    report = Report()
    limits = config.health
    problems = report.problems
    now = clock.now()
    try:
        with db.connection():
            report.outbox_backlog = outbox.backlog()
            due = outbox.oldest_due()
            since = outbox.failing_since()
            others = {channel: outbox.failing_since(channel) for channel in FAILING_CHANNELS}
    except Exception as exc:  # a database that is down is the report, not a 500
        if db.is_disconnect(exc):
            db.drop_idle()
        report.database = f"error: {type(exc).__name__}"
        problems.append(
            Problem(
                "database",
                f"the database cannot be read ({type(exc).__name__})",
                "is the database (server) up? `outofoffice check` names the error",
            )
        )
    else:
        result = probe.result() if probe else probe_write()
        if result is not None:
            report.database_writable = result.writable
            report.database_writable_age_seconds = _seconds(now - result.at)
            if not result.writable:
                problems.append(
                    Problem(
                        "database_writable",
                        f"the database cannot be written: {result.reason}",
                        ADVICE.get(result.reason, "the service's log names the error"),
                    )
                )
        if since is not None:
            report.mail_failing_since = _naive_utc(since)
        report.failing_since = {c: _naive_utc(at) for c, at in others.items() if at}
        failing = {"mail": report.mail_failing_since, **report.failing_since}
        for kind, at in failing.items():
            if at is not None and now - at > timedelta(seconds=limits.mail_failing_seconds):
                what = "mail" if kind == "mail" else FAILING_CHANNELS[kind]
                problems.append(
                    Problem(
                        kind,
                        f"{what} has failed for {_duration(_seconds(now - at))}, since "
                        f"{_iso(at)} (over [health] mail_failing_seconds = "
                        f"{limits.mail_failing_seconds})",
                        CHANNEL_ADVICE[kind],
                    )
                )
        if due is not None:
            waited = report.oldest_due_seconds = _seconds(now - due)
            if now - due > timedelta(seconds=limits.oldest_due_seconds):
                problems.append(
                    Problem(
                        "outbox",
                        f"the oldest due message has waited {_duration(waited)} "
                        f"(over [health] oldest_due_seconds = {limits.oldest_due_seconds})",
                        "is a scheduler running (`outofoffice stats`) and is mail going out? "
                        "`outofoffice outbox list --status queued` shows what waits and why",
                    )
                )
    _assess_space(config, report)
    report.scheduler = scheduler.state(config)
    if not report.scheduler.startswith("running"):
        problems.append(
            Problem(
                "scheduler",
                f"no process delivers mail (scheduler {report.scheduler})",
                "start `outofoffice serve` without --no-scheduler, or `outofoffice worker`",
            )
        )
    return report


def _assess_space(config: Config, report: Report) -> None:
    minimum = config.health.min_free_mb
    try:
        report.free_mb = shutil.disk_usage(config.data_dir).free // MIB
    except OSError as exc:
        report.problems.append(
            Problem(
                "disk",
                "the data folder's free space cannot be read",
                f"[storage] data_dir {config.data_dir}: {exc.strerror or type(exc).__name__}",
            )
        )
        return
    if report.free_mb < minimum:
        report.problems.append(
            Problem(
                "disk",
                f"{report.free_mb} MiB free on the data folder's disk "
                f"(under [health] min_free_mb = {minimum})",
                f"free space on the file system of {config.data_dir} or grow it; writes "
                "fail when it is full",
            )
        )
    report.low_space = report.free_mb < 2 * minimum

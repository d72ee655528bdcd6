"""APScheduler wiring only: which jobs run, how often, and who may run them.

Started by ``serve`` and ``worker`` (never at import). On SQLite a lock file in the
data dir keeps a second process from delivering the same outbox twice. On PostgreSQL
any number of processes run it: rows are claimed (outbox.py, dispatch.py), once-only
jobs take an advisory lock, and mail queued by a process without a scheduler of its own
wakes them (LISTEN/NOTIFY; on SQLite a datagram to the scheduler's socket).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from outofoffice import billing, db, dispatch, heartbeat, notify, outbox, retention
from outofoffice.config import Config
from outofoffice.instance import Instance
from outofoffice.senders import Senders

log = logging.getLogger(__name__)

OUTBOX_JOB = "outbox"
WEBHOOK_JOB = "webhooks"  # a job of its own: a slow endpoint never holds back email or SMS
OUTBOX_INTERVAL_SECONDS = 5
ESCALATION_JOB = "escalation"
ESCALATION_INTERVAL_SECONDS = 20
DIGEST_JOB = "digest"
SWEEP_JOB = "sweep"
BILLING_NOTICES_JOB = "billing-notices"
BILLING_RECONCILE_JOB = "billing-reconcile"
LOCK_NAME = "scheduler.lock"

_running: dict[Path, Scheduler] = {}


class SchedulerLocked(Exception):
    pass


def _lock_path(config: Config) -> Path:
    return config.data_dir / LOCK_NAME


def state(config: Config) -> str:
    """ "running", "running in another process" or "stopped", for /healthz: whether
    some process of the installation delivers, not only this one. On SQLite the lock
    file says; on PostgreSQL the heartbeats (`outofoffice stats` names the processes;
    this public page does not)."""
    mine = _running.get(_lock_path(config))
    if mine is not None and mine.running:
        return "running"
    if db.is_sqlite():
        return "running in another process" if _lock_held(config) else "stopped"
    try:
        others = heartbeat.delivering()
    except Exception as exc:  # the database is away: /healthz reports that already
        log.warning("could not read the heartbeats: %s", type(exc).__name__)
        return "unknown (the database cannot be read)"
    return "running in another process" if others else "stopped"


def _lock_held(config: Config) -> bool:
    try:
        fd = os.open(_lock_path(config), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class Scheduler:
    def __init__(self, instance: Instance):
        self.instance = instance
        self.lock_path = _lock_path(instance.config)
        self._lock_fd: int | None = None
        channels = list(instance.deliverers)
        self._jobs = [
            DeliveryJob(self, OUTBOX_JOB, [c for c in channels if c != "webhook"]),
            DeliveryJob(self, WEBHOOK_JOB, [c for c in channels if c == "webhook"]),
        ]
        self._listener: db.Listener | db.WakeSocket | None = None
        self._scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def _take_lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SchedulerLocked(
                f"another outofoffice process already runs the scheduler for "
                f"{self.instance.config.data_dir} (lock {self.lock_path}); start this one "
                "with --no-scheduler"
            ) from None
        self._lock_fd = fd

    def start(self) -> None:
        if db.is_sqlite():
            self._take_lock()
            try:
                with db.connection():
                    if count := outbox.let_go_of_earlier_claims():
                        log.info("outbox: %d emails a stopped process had claimed go now", count)
            except Exception as exc:  # they go when their lease ends
                log.warning("outbox: could not let go of earlier claims: %s", outbox.cause(exc))
        now = datetime.now(UTC)
        jobs = [
            *((job.run, job.job_id, {"seconds": OUTBOX_INTERVAL_SECONDS}) for job in self._jobs),
            (self.escalate, ESCALATION_JOB, {"seconds": ESCALATION_INTERVAL_SECONDS}),
            (self.send_digests, DIGEST_JOB, {"minutes": 5}),
            (self.sweep, SWEEP_JOB, {"hours": 1}),
        ]
        if billing.enabled(self.instance.config):
            jobs += [
                (self.billing_notices, BILLING_NOTICES_JOB, {"hours": 1}),
                (self.billing_reconcile, BILLING_RECONCILE_JOB, {"hours": 1}),  # daily
            ]
        for func, job_id, every in jobs:
            self._scheduler.add_job(
                func, "interval", id=job_id, replace_existing=True, next_run_time=now, **every
            )
        self._scheduler.start()
        outbox.on_enqueue(self.wake_outbox)
        self._listener = db.listener(self.wake_outbox)
        if self._listener is not None:
            self._listener.start()
        _running[self.lock_path] = self
        log.info("scheduler started")

    def stop(self) -> None:
        outbox.remove_listener(self.wake_outbox)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        for job in self._jobs:
            job.close()
        _running.pop(self.lock_path, None)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("scheduler stopped")

    def wake_outbox(self) -> None:
        """Run the delivery jobs now rather than at their next interval."""
        for job in self._jobs:
            job.wake()

    def deliver_outbox(self) -> None:
        """Every channel's pass now, in this thread (the CLI's and the tests' way)."""
        for job in self._jobs:
            job.run()

    def escalate(self) -> None:
        with db.connection():
            if count := dispatch.escalate_due(self.instance):
                log.info("escalated %d dispatch(es) whose vendor stayed silent", count)

    def sweep(self) -> None:
        with db.connection(), db.singleton(SWEEP_JOB) as mine:
            if mine:
                retention.sweep_all(self.instance.config)

    def billing_notices(self) -> None:
        from outofoffice.billing import lifecycle

        with db.connection(), db.singleton(BILLING_NOTICES_JOB) as mine:
            if mine and (count := lifecycle.send_notices(self.instance)):
                log.info("billing: %d notice(s) to owners", count)

    def billing_reconcile(self) -> None:
        """Every subscription re-read from the provider, for the webhooks that never came."""
        from outofoffice.billing import lifecycle

        with db.connection(), db.singleton(BILLING_RECONCILE_JOB) as mine:
            if mine and (count := lifecycle.reconcile(self.instance)):
                log.info("billing: %d subscription(s) changed since their last webhook", count)

    def send_digests(self) -> None:
        with db.connection(), db.singleton(DIGEST_JOB) as mine:
            if mine:
                notify.send_digests(self.instance)


class DeliveryJob:
    """One scheduler job delivering some channels: email, SMS and push in one, webhooks
    in another, so an endpoint that answers slowly delays only other webhooks."""

    def __init__(self, scheduler: Scheduler, job_id: str, channels: list[str]):
        self.scheduler = scheduler
        self.job_id = job_id
        self.channels = channels
        self._wanted = threading.Event()
        self._delivering = threading.Event()  # a pass runs: a wake sets the flag only
        self.senders: dict[str, Senders] = {}  # each channel's kept sessions

    def wake(self) -> None:
        """A wake that comes while the job runs is not lost: the running job sees the
        flag and goes again."""
        self._wanted.set()
        background = self.scheduler._scheduler
        if background.running and not self._delivering.is_set():
            background.modify_job(self.job_id, next_run_time=datetime.now(UTC))

    def run(self) -> None:
        """Passes of a few rows each until nothing is due and nothing new came in; each
        channel's senders (SMTP connections) stay open for the next run while mail
        flows, and close once unused for a while. Wakes meanwhile
        only set the flag (asking APScheduler to start a running job again would log a
        warning per wake); one that came as the run ended makes it go again."""
        while True:
            self._delivering.set()
            try:
                self._deliver_until_done()
            finally:
                self._delivering.clear()
            if not self._wanted.is_set():
                return

    def _deliver_until_done(self) -> None:
        instance = self.scheduler.instance
        for channel, deliverer in instance.deliverers.items():
            if channel in self.channels and channel not in self.senders:
                self.senders[channel] = Senders(deliverer)
        with db.connection():
            while True:
                self._wanted.clear()
                counts = dispatch.deliver_outbox(instance, self.senders, self.channels)
                if done := {k: v for k, v in counts.items() if v and k != "most"}:
                    log.info("%s: %s", self.job_id, ", ".join(f"{k} {v}" for k, v in done.items()))
                if not (self._wanted.is_set() or outbox.more_due(counts)):
                    break
        for senders in self.senders.values():
            senders.close_idle()

    def close(self) -> None:
        """Close the kept sessions (the scheduler stops)."""
        for senders in self.senders.values():
            senders.close()
        self.senders.clear()

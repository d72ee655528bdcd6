"""Server logs, aggregated: requests per day, route pattern and status, and nothing
about who asked. Counted in memory by the instance's web app; a thread of the web
process adds them to the daily totals about once a minute and when it stops, so no raw
access log is ever written."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import date

from outofoffice import clock, db
from outofoffice.models import RequestCount

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60


class Counts:
    """One instance's counts since the last flush: they belong to the app that made
    them, so another instance (a test, a second app) never writes them."""

    def __init__(self):
        self._counts: Counter[tuple[date, str, int]] = Counter()
        self._lock = threading.Lock()

    def count(self, route: str, status: int) -> None:
        """Count one response. Memory only: a request never waits on, or fails with, this."""
        with self._lock:
            self._counts[(clock.now().date(), route[:100], status)] += 1

    def flush(self) -> int:
        """Add the counts so far to the daily totals; returns how many totals changed.
        If the write fails, the counts are kept for the next try."""
        with self._lock:
            pending = dict(self._counts)
            self._counts.clear()
        if not pending:
            return 0
        try:
            with db.write():
                for (day, route, status), n in pending.items():
                    RequestCount.insert(day=day, route=route, status=status, count=n).on_conflict(
                        conflict_target=[RequestCount.day, RequestCount.route, RequestCount.status],
                        update={RequestCount.count: RequestCount.count + n},
                    ).execute()
        except Exception:
            with self._lock:
                self._counts.update(pending)
            raise
        return len(pending)


class Flusher(threading.Thread):
    """Writes the counts of the web process about once a minute, off the request path."""

    def __init__(self, counts: Counts):
        super().__init__(name="traffic-counts", daemon=True)
        self.counts = counts
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(FLUSH_SECONDS):
            self.flush_logged()

    def flush_logged(self) -> None:
        try:
            with db.connection():
                self.counts.flush()
        except Exception as exc:  # a busy database: the counts wait for the next minute
            log.warning("could not write request counts: %s", type(exc).__name__)

    def stop(self) -> None:
        self.stopping.set()
        self.flush_logged()

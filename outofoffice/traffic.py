"""Server logs, aggregated: requests per day, route pattern and status, and nothing
about who asked. Counted in memory; the web process adds them to the daily totals
about once a minute (and when it stops), so no raw access log is ever written."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import date

from outofoffice import clock, db
from outofoffice.models import RequestCount

FLUSH_SECONDS = 60

_counts: Counter[tuple[date, str, int]] = Counter()
_lock = threading.Lock()
_last_flush = time.monotonic()


def count(route: str, status: int) -> None:
    global _last_flush
    with _lock:
        _counts[(clock.now().date(), route[:100], status)] += 1
        due = time.monotonic() - _last_flush >= FLUSH_SECONDS
        if due:
            _last_flush = time.monotonic()
    if due:
        with db.connection():
            flush()


def flush() -> int:
    """Add the counts so far to the daily totals; returns how many totals changed."""
    with _lock:
        pending = dict(_counts)
        _counts.clear()
    if not pending:
        return 0
    with db.write():
        for (day, route, status), n in pending.items():
            RequestCount.insert(day=day, route=route, status=status, count=n).on_conflict(
                conflict_target=[RequestCount.day, RequestCount.route, RequestCount.status],
                update={RequestCount.count: RequestCount.count + n},
            ).execute()
    return len(pending)

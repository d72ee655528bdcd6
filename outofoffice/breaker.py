"""The circuit breaker in front of one mailer: while the relay is down, stop trying.

Without it every due email is tried on every pass while the relay is down: each try
fails, adds to the history and pushes that email's next try further out, so when the
relay answers again the backlog trickles out over minutes. Open, the outbox sends one
email at a time as a probe; the first that gets through (or is refused for good, which
also means the relay answers) closes it, and the outbox makes the whole backlog due.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from outofoffice import clock

OPEN_AFTER = 3  # failures in a row: the relay is the problem, not one message
PROBE_EVERY = timedelta(seconds=5)  # the scheduler's poll: recovery is seen within it
SLACK = timedelta(milliseconds=500)  # a poll that comes a little early still probes


class Breaker:
    """One per mailer and process (the instance holds it). One delivery pass runs at a
    time, but its senders run side by side: what they report is counted under a lock."""

    def __init__(self, open_after: int | None = OPEN_AFTER, probe_every: timedelta = PROBE_EVERY):
        """``open_after`` None: never opens (each webhook endpoint fails on its own)."""
        self.open_after = open_after
        self.probe_every = probe_every
        self.failures = 0
        self.is_open = False
        self.failing_since: datetime | None = None  # the first failure of this streak
        self.recovered = False  # it closed: the outbox releases the backlog, then resets
        self.heard = False  # the relay answered this process at least once
        self.told: str | None = None  # what this process last told the installation
        self._next_probe: datetime | None = None
        self._lock = threading.Lock()

    def allowance(self, batch: int) -> int:
        """How many emails this pass may try: a batch while closed; open, one probe
        every ``probe_every``, else none."""
        if not self.is_open:
            return batch
        now = clock.now()
        if self._next_probe is not None and now < self._next_probe - SLACK:
            return 0
        self._next_probe = now + self.probe_every
        return 1

    def failed(self) -> bool:
        """A try that may work later failed; True when this one opens it."""
        with self._lock:
            return self._failed()

    def _failed(self) -> bool:
        if self.failures == 0:
            self.failing_since = clock.now()
        self.failures += 1
        if self.is_open or self.open_after is None or self.failures < self.open_after:
            return False
        self.is_open = True
        self._next_probe = clock.now() + self.probe_every
        return True

    def answered(self) -> None:
        """The relay answered: it took the email, or refused it for good."""
        with self._lock:
            self._answered()

    def _answered(self) -> None:
        self.recovered = self.recovered or self.is_open
        self.heard = True
        self.failures, self.is_open = 0, False
        self.failing_since = self._next_probe = None

    def news(self) -> str | None:
        """What the installation should hear from this process now: "failing" once it
        opened, "ok" once the relay answered after that (or for the first time: a
        stopped process may have left "failing" behind); None when nothing changed. A
        process that has not heard the relay yet says nothing."""
        state = "failing" if self.is_open else "ok" if self.heard and not self.failures else None
        return state if state and state != self.told else None

"""A channel's senders in one process: up to the deliverer's ``parallel`` open sessions
(an SMTP connection each), kept between delivery passes while they are used. A pass's
messages go out over them side by side, so one slow answer (a relay that takes seconds
over one recipient, a webhook endpoint near its deadline) holds back only its own
sender, and a busy outbox does not connect once per pass."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass

from outofoffice import db
from outofoffice.channels.base import Deliverer

IDLE_SECONDS = 30.0  # a kept session unused this long is closed (relays drop idle ones)


@dataclass
class _Held:
    opened: AbstractContextManager
    session: Deliverer
    used_at: float = 0.0


class Senders:
    """``keep``: sessions stay open for the next pass (the scheduler's); otherwise they
    close when the pass ends (a command's or a test's one-off delivery)."""

    def __init__(self, deliverer: Deliverer, keep: bool = True):
        self.deliverer = deliverer
        self.keep = keep
        self.count = max(1, deliverer.parallel)
        self._free: list[_Held] = []
        self._lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(self.count - 1, thread_name_prefix=f"send-{deliverer.channel}")
            if self.count > 1
            else None
        )

    def run(self, rows: list, send: Callable[[object, Deliverer], bool]) -> list:
        """Send ``rows`` in their order over up to ``count`` sessions at once;
        ``send(row, session)`` returns False to stop every sender (the database refuses
        to record outcomes). Returns the rows no sender took."""
        waiting = deque(rows)
        taking = threading.Lock()
        stop = threading.Event()

        def lane() -> None:
            held = self._take()
            try:
                while not stop.is_set():
                    with taking:
                        if not waiting:
                            return
                        row = waiting.popleft()
                    if not send(row, held.session):
                        stop.set()
            finally:
                self._give_back(held)

        def lane_with_connection() -> None:
            """A connection of this thread's own, for the outcomes it records; with
            none to be had (the database is away) this sender sends nothing."""
            with ExitStack() as stack:
                try:
                    stack.enter_context(db.connection())
                except Exception as exc:
                    if db.is_away(exc):
                        return
                    raise
                lane()

        extra = min(self.count, len(rows)) - 1
        others = [self._pool.submit(lane_with_connection) for _ in range(extra)]
        try:
            lane()
        finally:
            for other in others:
                other.result()
        return list(waiting)

    def _take(self) -> _Held:
        with self._lock:
            if self._free:
                return self._free.pop()
        opened = self.deliverer.session()
        return _Held(opened, opened.__enter__())

    def _give_back(self, held: _Held) -> None:
        if not self.keep:
            held.opened.__exit__(None, None, None)
            return
        held.used_at = time.monotonic()
        with self._lock:
            self._free.append(held)

    def close_idle(self, idle: float = IDLE_SECONDS) -> None:
        """Close the sessions nobody used for ``idle`` seconds."""
        cutoff = time.monotonic() - idle
        with self._lock:
            stale = [h for h in self._free if h.used_at <= cutoff]
            self._free = [h for h in self._free if h.used_at > cutoff]
        for held in stale:
            held.opened.__exit__(None, None, None)

    def close(self) -> None:
        self.close_idle(idle=-1.0)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

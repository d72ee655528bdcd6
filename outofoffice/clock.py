"""The one source of "now", so tests can move time.

Times are naive UTC datetimes everywhere in storage; zones are applied at the edges.
"""

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None) + _offset


def advance(delta: timedelta) -> None:
    """Move the clock forward (tests and demos only)."""
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta(0)


def timestamp() -> float:
    """now() as POSIX seconds, for signed expiry times."""
    return now().replace(tzinfo=UTC).timestamp()

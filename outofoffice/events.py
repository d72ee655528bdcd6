"""A dispatch's history lines: each written in the transaction of the change it records,
and a new dispatch's first few (submitted, routed, each message queued, the owner told)
in one statement at the end of its transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from outofoffice import clock, db
from outofoffice.models import Dispatch, DispatchEvent, Vendor


def event(d: Dispatch, kind: str, vendor: Vendor | int | None = None, detail: str = "") -> None:
    row = {
        "dispatch": d.id,
        "account": d.account_id,
        "at": clock.now(),
        "kind": kind,
        "vendor": vendor,
        "detail": detail,
    }
    pending = getattr(d, "pending_events", None)
    if pending is not None:
        pending.append(row)
        return
    db.insert(DispatchEvent, **row)


@contextmanager
def together(d: Dispatch) -> Iterator[None]:
    """Inside (and inside a transaction), the dispatch's events wait, and go in one
    INSERT as the block ends; nothing in it may read them back meanwhile."""
    d.pending_events = []
    try:
        yield
        rows = d.pending_events
        d.pending_events = None
        if rows:
            db.insert_many(DispatchEvent, rows)
    finally:
        d.pending_events = None

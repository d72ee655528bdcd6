"""The owner's lists of dispatches: the counts, what needs them now, a line per
dispatch, and search by reference, caller name or phone.

Caller names and phones are encrypted at rest, so a search by them decrypts this
account's dispatches (newest first, a bounded number) rather than asking the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from outofoffice import clock, dispatch, routing, timeline
from outofoffice.instance import Instance
from outofoffice.models import Account, Dispatch, DispatchEvent

SOON = timedelta(minutes=10)  # an escalation this close needs the owner's eyes
SEARCH_LIMIT = 2000  # dispatches decrypted for one name or phone search
SUMMARY_LENGTH = 90


@dataclass(frozen=True)
class Counts:
    open: int
    waiting: int
    unassigned: int
    resolved_today: int


def _local_midnight_utc(account: Account, now: datetime) -> datetime:
    local = routing.local_time(account, now)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def counts(account: Account) -> Counts:
    mine = Dispatch.select().where(Dispatch.account == account)
    since = _local_midnight_utc(account, clock.now())
    resolved_today = (
        DispatchEvent.select(DispatchEvent.dispatch)
        .where(
            DispatchEvent.account == account,
            DispatchEvent.kind == "resolved",
            DispatchEvent.at >= since,
        )
        .distinct()
        .count()
    )
    return Counts(
        open=mine.where(Dispatch.status.not_in(dispatch.FINISHED)).count(),
        waiting=mine.where(Dispatch.status.in_(dispatch.WAITING)).count(),
        unassigned=mine.where(Dispatch.status.in_(dispatch.NEEDS_OFFICE)).count(),
        resolved_today=resolved_today,
    )


def needs_you(account: Account) -> list[Dispatch]:
    """Unassigned and failed requests, then those whose vendor's time runs out soon."""
    stuck = list(
        Dispatch.select()
        .where(Dispatch.account == account, Dispatch.status.in_(dispatch.NEEDS_OFFICE))
        .order_by(Dispatch.created_at)
    )
    soon = list(
        Dispatch.select()
        .where(
            Dispatch.account == account,
            Dispatch.status.in_(dispatch.WAITING),
            Dispatch.escalate_at <= clock.now() + SOON,
        )
        .order_by(Dispatch.escalate_at)
    )
    return stuck + soon


@dataclass(frozen=True)
class Line:
    d: Dispatch
    caller: str
    phone: str
    summary: str
    status: timeline.Status
    received: str


def lines(instance: Instance, rows: list[Dispatch]) -> list[Line]:
    """One line per dispatch, decrypted for the owner who holds it."""
    out = []
    for d in rows:
        caller = dispatch.caller(instance, d)
        text = " ".join(caller["description"].split())
        if len(text) > SUMMARY_LENGTH:
            text = text[: SUMMARY_LENGTH - 1].rstrip() + "…"
        out.append(
            Line(
                d,
                caller["name"],
                caller["phone"],
                text,
                timeline.status(d),
                timeline.when(d.account, d.created_at),
            )
        )
    return out


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def search(instance: Instance, query, words: str) -> list[int]:
    """Ids of the dispatches of ``query`` (already this account's) whose reference,
    caller name or caller phone matches ``words``: a reference exactly, names by
    substring, phones by their digits, whatever spaces or dashes either side typed.
    Only the name and phone are decrypted, and only for the newest SEARCH_LIMIT."""
    wanted = words.strip().casefold()
    digits = _digits(words)
    decrypt = instance.keys.decrypt
    columns = (Dispatch.id, Dispatch.reference, Dispatch.caller_name, Dispatch.caller_phone)
    found = []
    for row_id, reference, name, phone in query.select(*columns).limit(SEARCH_LIMIT).tuples():
        if (
            reference.casefold() == wanted
            or wanted in decrypt(name).casefold()
            or (len(digits) >= 4 and digits in _digits(decrypt(phone)))
        ):
            found.append(row_id)
    return found

"""The numbers behind the Reports page: one account, the last 30 or 90 days.

Days are the account's local days (a request at 23:30 in Tokyo counts on that Tokyo
day), and the period ends today, so "the last 30 days" is today and the 29 before.
Everything is counted in Python from a few columns of this account's rows for the
period alone: the same on SQLite and PostgreSQL, and small for one firm.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from outofoffice import clock, routing
from outofoffice.models import Account, Dispatch, DispatchEvent, Vendor
from outofoffice.portability import cell

PERIODS = (30, 90)
DEFAULT_PERIOD = 30


@dataclass(frozen=True)
class AcceptTimes:
    """How long callers waited for one vendor to accept: from the dispatch's creation
    to that vendor's ``accepted`` event, so a decline or a silence before it counts."""

    vendor: str
    accepted: int
    median: timedelta
    p90: timedelta


@dataclass(frozen=True)
class Figures:
    days: int
    timezone: str
    first_day: date
    last_day: date
    per_day: list[tuple[date, int]]  # every day of the period, oldest first, zeros too
    escalated: int  # dispatches with an ``escalated`` event
    unassigned: int  # dispatches left unassigned (status or ``unassigned`` event)
    accept_times: list[AcceptTimes]  # slowest median first

    @property
    def total(self) -> int:
        return sum(count for _, count in self.per_day)

    @property
    def escalated_share(self) -> float:
        return self.escalated / self.total if self.total else 0.0

    @property
    def unassigned_share(self) -> float:
        return self.unassigned / self.total if self.total else 0.0

    @property
    def quiet_days(self) -> int:
        return sum(1 for _, count in self.per_day if count == 0)

    @property
    def busiest(self) -> tuple[date, int] | None:
        """The day with the most requests (the latest of equals), None when there are none."""
        if not self.total:
            return None
        return max(reversed(self.per_day), key=lambda item: item[1])


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (a spreadsheet's PERCENTILE.INC),
    so an owner can check the page's figures against their CSV."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def period_days(days: int) -> int:
    """``days`` if it is one of the offered periods; ValueError otherwise."""
    if days not in PERIODS:
        raise ValueError(f"a period is one of {', '.join(map(str, PERIODS))} days")
    return days


def _utc(day: date, zone: ZoneInfo) -> datetime:
    """The naive UTC moment a local day starts."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def for_period(account: Account, days: int = DEFAULT_PERIOD) -> Figures:
    """This account's figures for the last ``days`` local days, today included."""
    days = period_days(days)
    zone = ZoneInfo(account.timezone)
    now = clock.now()
    last_day = routing.local_time(account, now).date()
    first_day = last_day - timedelta(days=days - 1)
    start, end = _utc(first_day, zone), _utc(last_day + timedelta(days=1), zone)

    in_period = (
        (Dispatch.account == account) & (Dispatch.created_at >= start) & (Dispatch.created_at < end)
    )
    dispatches = {
        dispatch_id: (created_at, status)
        for dispatch_id, created_at, status in Dispatch.select(
            Dispatch.id, Dispatch.created_at, Dispatch.status
        )
        .where(in_period)
        .tuples()
    }
    counts = Counter(routing.local_time(account, at).date() for at, _ in dispatches.values())
    per_day = [(day, counts[day]) for day in (first_day + timedelta(n) for n in range(days))]

    events = (
        DispatchEvent.select(
            DispatchEvent.dispatch, DispatchEvent.kind, DispatchEvent.vendor, DispatchEvent.at
        )
        .join(Dispatch)
        .where(
            in_period,
            DispatchEvent.account == account,
            DispatchEvent.kind.in_(("accepted", "escalated", "unassigned")),
        )
        .order_by(DispatchEvent.id)
        .tuples()
    )
    escalated: set[int] = set()
    unassigned = {d for d, (_, status) in dispatches.items() if status == "unassigned"}
    first_accept: dict[tuple[int, int], datetime] = {}  # (dispatch, vendor) -> when
    for dispatch_id, kind, vendor_id, at in events:
        if dispatch_id not in dispatches:  # submitted between the two reads
            continue
        if kind == "escalated":
            escalated.add(dispatch_id)
        elif kind == "unassigned":
            unassigned.add(dispatch_id)
        elif vendor_id is not None:  # a vendor since deleted is nobody's to report
            first_accept.setdefault((dispatch_id, vendor_id), at)

    waits: dict[int, list[int]] = {}
    for (dispatch_id, vendor_id), at in first_accept.items():
        seconds = (at - dispatches[dispatch_id][0]).total_seconds()
        waits.setdefault(vendor_id, []).append(max(round(seconds), 0))  # to the second
    names = dict(
        Vendor.select(Vendor.id, Vendor.name)
        .where(Vendor.account == account, Vendor.id.in_(list(waits) or [-1]))
        .tuples()
    )
    accept_times = [
        AcceptTimes(
            vendor=names[vendor_id],
            accepted=len(seconds),
            median=timedelta(seconds=percentile(seconds, 0.5)),
            p90=timedelta(seconds=percentile(seconds, 0.9)),
        )
        for vendor_id, seconds in waits.items()
        if vendor_id in names
    ]
    accept_times.sort(key=lambda t: (-t.median, t.vendor.lower()))
    return Figures(
        days=days,
        timezone=account.timezone,
        first_day=first_day,
        last_day=last_day,
        per_day=per_day,
        escalated=len(escalated),
        unassigned=len(unassigned),
        accept_times=accept_times,
    )


CSV_COLUMNS = ("figure", "day", "vendor", "value")


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.1f}"


def _percent(share: float) -> str:
    return f"{share * 100:.1f}"


def to_csv(figures: Figures) -> str:
    """The page's figures as one long table (figure, day, vendor, value), so a
    spreadsheet can filter it by figure; cells a spreadsheet would run are defused."""
    rows: list[tuple] = [
        ("period_days", "", "", figures.days),
        ("first_day", figures.first_day.isoformat(), "", ""),
        ("last_day", figures.last_day.isoformat(), "", ""),
        ("timezone", "", "", figures.timezone),
    ]
    rows += [("requests", day.isoformat(), "", count) for day, count in figures.per_day]
    rows += [
        ("requests_total", "", "", figures.total),
        ("escalated", "", "", figures.escalated),
        ("escalated_percent", "", "", _percent(figures.escalated_share)),
        ("unassigned", "", "", figures.unassigned),
        ("unassigned_percent", "", "", _percent(figures.unassigned_share)),
    ]
    for times in figures.accept_times:
        rows += [
            ("accepted", "", times.vendor, times.accepted),
            ("accept_median_minutes", "", times.vendor, _minutes(times.median)),
            ("accept_p90_minutes", "", times.vendor, _minutes(times.p90)),
        ]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([cell(value) for value in row] for row in rows)
    return out.getvalue()

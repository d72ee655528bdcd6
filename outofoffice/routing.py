"""Which route a request takes: subject x category x business hours.

Most specific wins (subject+category, then category, then subject, then the account
default); at each level a route for the current time of day (business_hours or
after_hours) beats an "always" route. A route with no vendor left is skipped.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from outofoffice import db
from outofoffice.models import Account, Route, Vendor

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WHEN = ("always", "business_hours", "after_hours")
DEFAULT_HOURS: dict = {day: [["09:00", "17:00"]] for day in WEEKDAYS[:5]} | {
    "sat": [],
    "sun": [],
    "holidays": [],
}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d|24:00")


class HoursError(ValueError):
    """Business hours that cannot be understood; the message says what to fix."""


def check_business_hours(value: object) -> dict:
    """A normalised copy of a business-hours mapping, or HoursError."""
    if not isinstance(value, dict):
        raise HoursError("business hours must be a mapping of weekdays to intervals")
    unknown = set(value) - set(WEEKDAYS) - {"holidays"}
    if unknown:
        raise HoursError(f"unknown key(s) in business hours: {', '.join(sorted(unknown))}")
    hours: dict = {}
    for day in WEEKDAYS:
        intervals = value.get(day, [])
        if not isinstance(intervals, list):
            raise HoursError(f"{day}: expected a list of [start, end] pairs")
        clean = []
        for interval in intervals:
            if (
                not isinstance(interval, list | tuple)
                or len(interval) != 2
                or not all(isinstance(t, str) and _HHMM.fullmatch(t) for t in interval)
            ):
                raise HoursError(f'{day}: each interval is ["HH:MM", "HH:MM"], got {interval!r}')
            if interval[0] >= interval[1]:
                raise HoursError(f"{day}: {interval[0]}-{interval[1]} ends before it starts")
            clean.append([interval[0], interval[1]])
        hours[day] = sorted(clean)
    holidays = value.get("holidays", [])
    if not isinstance(holidays, list):
        raise HoursError("holidays must be a list of YYYY-MM-DD dates")
    for day in holidays:
        try:
            if not (isinstance(day, str) and _DATE.fullmatch(day)):
                raise ValueError(day)
            date.fromisoformat(day)
        except ValueError:
            raise HoursError(f"holiday {day!r} is not a YYYY-MM-DD date") from None
    hours["holidays"] = sorted(set(holidays))
    return hours


def local_time(account: Account, at_utc: datetime) -> datetime:
    """A stored (naive UTC) time in the account's timezone."""
    return in_zone(account.timezone, at_utc)


def in_zone(timezone: str, at_utc: datetime) -> datetime:
    """A stored (naive UTC) time in a timezone named by its IANA name."""
    return at_utc.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(timezone))


def is_business_hours(account: Account, at_utc: datetime) -> bool:
    hours = account.business_hours or DEFAULT_HOURS
    local = local_time(account, at_utc)
    if local.date().isoformat() in hours.get("holidays", []):
        return False
    now = local.time()
    for start, end in hours.get(WEEKDAYS[local.weekday()], []):
        end_time = time(23, 59, 59, 999999) if end == "24:00" else time.fromisoformat(end)
        if time.fromisoformat(start) <= now <= end_time:
            return True
    return False


CHAIN_SQL = (
    'SELECT v.* FROM "vendor" v JOIN "route_vendor" rv ON rv."vendor_id" = v."id"'
    ' WHERE rv."route_id" = ? AND v."active" ORDER BY rv."position"'
)


def _chain(route: Route) -> list[Vendor]:
    """The route's active vendors in order (a fixed statement: this runs per request)."""
    return list(Vendor.raw(db.sql(CHAIN_SQL), route.id))


def match(
    account: Account, subject_id: int | None, category_id: int | None, at_utc: datetime
) -> tuple[Route, list[Vendor]] | None:
    """The route a request takes now, and its vendors in order; None if no route fits."""
    current = "business_hours" if is_business_hours(account, at_utc) else "after_hours"
    ranked = []
    routes = Route.raw(db.sql('SELECT * FROM "route" WHERE "account_id" = ?'), account.id)
    for route in routes:
        if route.when not in ("always", current):
            continue
        if route.subject_id not in (None, subject_id) or route.category_id not in (
            None,
            category_id,
        ):
            continue
        level = (2 if route.category_id else 0) + (1 if route.subject_id else 0)
        ranked.append((level, route.when != "always", -route.id, route))
    for *_, route in sorted(ranked, key=lambda r: r[:3], reverse=True):
        vendors = _chain(route)
        if vendors:
            return route, vendors
    return None


def describe(route: Route, dispatch) -> str:
    """How the timeline says which route a dispatch took, e.g. "after_hours: Plumbing"."""
    names = (
        route.subject_id and dispatch.subject_label,
        route.category_id and dispatch.category_label,
    )
    parts = [name for name in names if name]
    return f"{route.when}: {' / '.join(parts) or 'default route'}"

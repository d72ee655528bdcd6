"""The owner's data out and in: the export format (SPEC section 8) and the history CSV.

An import is checked in full before anything is written; a bad file is reported with
every problem and creates nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime

from outofoffice import accounts, clock, countries, db, dispatch, notify, owner_setup, routing
from outofoffice.errors import ValidationError
from outofoffice.instance import Instance
from outofoffice.keys import hash_token, new_push_topic
from outofoffice.models import (
    Account,
    Category,
    Dispatch,
    DispatchEvent,
    Route,
    RouteVendor,
    Subject,
    Vendor,
)

FORMAT = "outofoffice-export"
VERSION = 1
EVENT_KINDS = (
    "submitted",
    "routed",
    "unrouted",
    "email_queued",
    "email_sent",
    "email_failed",
    "sms_queued",
    "sms_sent",
    "sms_failed",
    "push_queued",
    "push_sent",
    "push_failed",
    "webhook_failed",
    "accepted",
    "declined",
    "escalated",
    "unassigned",
    "resolved",
    "reassigned",
    "closed",
    "repeat",
    "owner_notified",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def iso(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


def parse_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


# --- history --------------------------------------------------------------------------


def history_query(account: Account, filters: dict):
    """This account's dispatches, newest first, narrowed by the owner's filters."""
    query = Dispatch.select().where(Dispatch.account == account)
    if filters.get("invalid"):
        return query.where(Dispatch.id < 0)
    if status := filters.get("status"):
        query = query.where(Dispatch.status == status)
    for key, column in (("subject", Dispatch.subject), ("category", Dispatch.category)):
        if value := filters.get(key):
            query = query.where(column == (db.parse_id(value) or -1))
    if since := filters.get("from"):
        query = query.where(Dispatch.created_at >= since)
    if until := filters.get("to"):
        query = query.where(Dispatch.created_at < until)
    return query.order_by(Dispatch.created_at.desc(), Dispatch.id.desc())


def cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


HISTORY_COLUMNS = (
    "reference",
    "received",
    "status",
    "subject",
    "category",
    "caller_name",
    "caller_phone",
    "description",
    "vendor",
    "accepted",
    "resolved",
    "closed",
    "events",
)


def history_csv(instance: Instance, account: Account, query) -> str:
    """The dispatch history for insurers and records: one line per dispatch, times in
    the account's timezone."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HISTORY_COLUMNS)

    def local(at):
        return routing.local_time(account, at).strftime("%Y-%m-%d %H:%M") if at else ""

    for d in query:
        events = list(
            DispatchEvent.select().where(DispatchEvent.dispatch == d).order_by(DispatchEvent.id)
        )
        first = {}
        for e in events:
            first.setdefault(e.kind, e.at)
        caller = dispatch.caller(instance, d)
        writer.writerow(
            cell(v)
            for v in (
                d.reference,
                local(d.created_at),
                d.status,
                d.subject_label,
                d.category_label,
                caller["name"],
                caller["phone"],
                caller["description"],
                d.vendor.name if d.vendor_id else "",
                local(first.get("accepted")),
                local(first.get("resolved")),
                local(first.get("closed")),
                " > ".join(e.kind for e in events),
            )
        )
    return out.getvalue()


# --- export ---------------------------------------------------------------------------


def export(
    instance: Instance, account: Account, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Everything the owner configured and every dispatch with its events;
    progress(done, total) counts dispatches."""
    keys = {}

    def key_of(prefix: str, obj) -> str | None:
        if obj is None:
            return None
        return keys.setdefault(
            (prefix, obj.id), f"{prefix}{len([k for k in keys if k[0] == prefix]) + 1}"
        )

    vendors = Vendor.select().where(Vendor.account == account).order_by(Vendor.id)
    subjects = Subject.select().where(Subject.account == account).order_by(Subject.id)
    categories = (
        Category.select()
        .where(Category.account == account)
        .order_by(Category.position, Category.id)
    )
    data = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": iso(clock.now()),
        "account": {
            "email": account.email,
            "name": account.name,
            "business_name": account.business_name,
            "slug": account.slug,
            "industry": account.industry,
            "timezone": account.timezone,
            "contact_phone": account.contact_phone,
            "notify": account.notify,
            "escalate_after_minutes": account.escalate_after_minutes,
            "digest_hour": account.digest_hour,
            "business_hours": account.business_hours or routing.DEFAULT_HOURS,
            "caller_sms": account.caller_sms,
            "country": account.country,
        },
        "vendors": [
            {
                "key": key_of("v", v),
                "name": v.name,
                "company": v.company,
                "email": v.email,
                "phone": v.phone,
                "notes": v.notes,
                "active": v.active,
                "channels": v.channels or ["email"],
                "push_topic": v.push_topic,
            }
            for v in vendors
        ],
        "subjects": [
            {"key": key_of("s", s), "name": s.name, "address": s.address, "reference": s.reference}
            for s in subjects
        ],
        "categories": [
            {
                "key": key_of("c", c),
                "name": c.name,
                "description": c.description,
                "emergency": c.emergency,
            }
            for c in categories
        ],
    }
    data["routes"] = [
        {
            "subject": key_of("s", r.subject) if r.subject_id else None,
            "category": key_of("c", r.category) if r.category_id else None,
            "when": r.when,
            "vendors": [key_of("v", v) for v in owner_setup.chain(r)],
        }
        for r in owner_setup.routes(account)
    ]
    data["dispatches"] = []
    rows = Dispatch.select().where(Dispatch.account == account)
    total = rows.count()
    for done, d in enumerate(rows.order_by(Dispatch.created_at, Dispatch.id), 1):
        if progress:
            progress(done, total)
        caller = dispatch.caller(instance, d)
        events = (
            DispatchEvent.select().where(DispatchEvent.dispatch == d).order_by(DispatchEvent.id)
        )
        data["dispatches"].append(
            {
                "reference": d.reference,
                "created_at": iso(d.created_at),
                "subject": key_of("s", d.subject) if d.subject_id else None,
                "category": key_of("c", d.category) if d.category_id else None,
                "caller_name": caller["name"],
                "caller_phone": caller["phone"],
                "description": caller["description"],
                "status": d.status,
                "events": [
                    {
                        "at": iso(e.at),
                        "kind": e.kind,
                        "vendor": key_of("v", e.vendor) if e.vendor_id else None,
                        "detail": e.detail,
                    }
                    for e in events
                ],
            }
        )
    return data


# --- import ---------------------------------------------------------------------------


class ImportError_(ValidationError):
    """A file that cannot be imported; ``errors`` maps each place to its problem."""


REFERENCE = re.compile(r"[A-Z0-9][A-Z0-9-]{3,15}")


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _list(parent: dict, key: str, problems: list[str], where: str = "") -> list:
    value = parent.get(key) or []
    if not isinstance(value, list):
        problems.append(f"{where + '.' if where else ''}{key}: must be a list")
        return []
    return value


def _check(data: object) -> list[str]:
    """Every problem of an export file, as 'where: what' lines."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["the file must hold one JSON object"]
    if data.get("format") != FORMAT:
        problems.append(f'format: must be "{FORMAT}"')
    if data.get("version") != VERSION:
        problems.append(f"version: must be {VERSION}, got {data.get('version')!r}")
    account = data.get("account")
    if not isinstance(account, dict):
        return [*problems, "account: missing"]
    form = {k: str(account.get(k, "")) for k in accounts.SIGNUP_FIELDS}
    try:
        accounts.clean_signup(form)
    except ValidationError as exc:
        problems += [f"account.{k}: {v}" for k, v in exc.errors.items()]
    if Account.select().where(Account.email == accounts.normalise_email(form["email"])).exists():
        problems.append(f"account.email: an account with {form['email']} exists already")
    country = account.get("country", "")
    if not (country == "" or isinstance(country, str) and countries.CODE.fullmatch(country)):
        problems.append("account.country: must be a two-letter country code such as US or GB")
    if account.get("notify", "every") not in notify.NOTIFY:
        problems.append(f"account.notify: must be one of {', '.join(notify.NOTIFY)}")
    for key, default, low, high in (
        ("escalate_after_minutes", 15, 1, 1440),
        ("digest_hour", 8, 0, 23),
    ):
        if not _whole(account.get(key, default), low, high):
            problems.append(f"account.{key}: a whole number from {low} to {high}")
    phone = account.get("contact_phone")
    if phone and (problem := dispatch.phone_problem(str(phone))):
        problems.append(f"account.contact_phone: {problem}")
    try:
        routing.check_business_hours(account.get("business_hours") or routing.DEFAULT_HOURS)
    except routing.HoursError as exc:
        problems.append(f"account.business_hours: {exc}")

    known: dict[str, set] = {}
    for section, kind in (
        ("vendors", "vendors"),
        ("subjects", "subjects"),
        ("categories", "categories"),
    ):
        keys = known.setdefault(section, set())
        for index, entry in enumerate(_list(data, section, problems)):
            where = f"{section}[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                problems.append(f"{where}: needs a key (text)")
                continue
            if not isinstance(entry.get("active", True), bool):
                problems.append(f"{where}.active: true or false")
            channels = entry.get("channels", ["email"])
            if section == "vendors" and (
                not isinstance(channels, list) or not set(channels) <= set(VENDOR_CHANNELS)
            ):
                problems.append(f"{where}.channels: a list of email, sms and push")
            if entry["key"] in keys:
                problems.append(f"{where}: key {entry['key']!r} is used twice")
            keys.add(entry["key"])
            try:
                owner_setup.clean(
                    owner_setup.KINDS[kind], {k: v for k, v in entry.items() if k != "key"}
                )
            except ValidationError as exc:
                problems += [f"{where}.{k}: {v}" for k, v in exc.errors.items()]

    def ref(where: str, section: str, value) -> None:
        if value is not None and (not isinstance(value, str) or value not in known[section]):
            problems.append(f"{where}: no {section} entry with key {value!r}")

    for index, route in enumerate(_list(data, "routes", problems)):
        where = f"routes[{index}]"
        if not isinstance(route, dict):
            problems.append(f"{where}: must be an object")
            continue
        ref(f"{where}.subject", "subjects", route.get("subject"))
        ref(f"{where}.category", "categories", route.get("category"))
        if route.get("when", "always") not in routing.WHEN:
            problems.append(f"{where}.when: must be one of {', '.join(routing.WHEN)}")
        vendors = route.get("vendors") or []
        if not isinstance(vendors, list) or not vendors:
            problems.append(f"{where}.vendors: at least one vendor key")
        else:
            for vendor in vendors:
                ref(f"{where}.vendors", "vendors", vendor)
    references = set()
    for index, d in enumerate(_list(data, "dispatches", problems)):
        where = f"dispatches[{index}]"
        if not isinstance(d, dict):
            problems.append(f"{where}: must be an object")
            continue
        reference = d.get("reference")
        if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
            problems.append(f"{where}.reference: 4 to 16 capital letters, digits and hyphens")
        elif reference in references:
            problems.append(f"{where}.reference: {reference} is used twice")
        elif Dispatch.select().where(Dispatch.reference == reference).exists():
            problems.append(f"{where}.reference: {reference} exists on this instance already")
        references.add(reference)
        ref(f"{where}.subject", "subjects", d.get("subject"))
        ref(f"{where}.category", "categories", d.get("category"))
        if d.get("status") not in dispatch.STATUSES:
            problems.append(f"{where}.status: must be one of {', '.join(dispatch.STATUSES)}")
        caller = [d.get(f) for f in ("caller_name", "caller_phone", "description")]
        if not all(isinstance(value, str) for value in caller):
            problems.append(f"{where}: caller_name, caller_phone and description must be text")
        else:
            checks = {
                "caller_name": accounts.text_problem(caller[0], "the caller's name"),
                "caller_phone": dispatch.phone_problem(caller[1]),
                "description": "at most 4000 characters" if len(caller[2]) > 4000 else None,
            }
            problems += [f"{where}.{k}: {v}" for k, v in checks.items() if v]
        try:
            parse_iso(str(d.get("created_at")))
        except ValueError:
            problems.append(f"{where}.created_at: must be a time such as 2026-11-18T07:42:10Z")
        for e_index, e in enumerate(_list(d, "events", problems, where)):
            e_where = f"{where}.events[{e_index}]"
            if not isinstance(e, dict) or e.get("kind") not in EVENT_KINDS:
                problems.append(f"{e_where}.kind: must be one of the event kinds")
                continue
            if not isinstance(e.get("detail") or "", str):
                problems.append(f"{e_where}.detail: must be text")
            ref(f"{e_where}.vendor", "vendors", e.get("vendor"))
            try:
                parse_iso(str(e.get("at")))
            except ValueError:
                problems.append(f"{e_where}.at: must be a time")
    return problems


VENDOR_CHANNELS = ("email", "sms", "push")
TOPIC = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _vendor_channels(entry: dict) -> dict:
    """A vendor's channels (email always among them) and push topic, as exported; a
    file from before channels, or a topic that is not one of ours, gets a new topic."""
    channels = entry.get("channels") or ["email"]
    topic = entry.get("push_topic") or ""
    return {
        "channels": [c for c in VENDOR_CHANNELS if c == "email" or c in channels],
        "push_topic": topic if TOPIC.fullmatch(topic) else new_push_topic(),
    }


def import_account(
    instance: Instance, data: object, progress: Callable[[int, int], None] | None = None
) -> Account:
    """Create the account an export describes, or nothing (ImportError_ lists why);
    progress(done, total) counts dispatches."""
    problems = _check(data)
    if problems:
        raise ImportError_({str(i): p for i, p in enumerate(problems)})
    acc = data["account"]
    with db.write():
        account = accounts.create_account(**{k: str(acc[k]) for k in accounts.SIGNUP_FIELDS})
        Category.delete().where(Category.account == account).execute()  # the file's own
        account.contact_phone = acc.get("contact_phone", "") or ""
        account.notify = acc.get("notify", "every")
        account.escalate_after_minutes = acc.get("escalate_after_minutes", 15)
        account.digest_hour = acc.get("digest_hour", 8)
        account.caller_sms = acc.get("caller_sms") is True
        account.country = acc.get("country") or account.country  # else from the timezone
        account.business_hours = routing.check_business_hours(
            acc.get("business_hours") or routing.DEFAULT_HOURS
        )
        account.save()
        made: dict[tuple[str, str], object] = {}
        for section in ("vendors", "subjects", "categories"):
            kind = owner_setup.KINDS[section]
            for position, entry in enumerate(data.get(section, [])):
                values = owner_setup.clean(kind, {k: v for k, v in entry.items() if k != "key"})
                if section == "vendors":
                    values["active"] = entry.get("active", True) is not False
                    values |= _vendor_channels(entry)
                if section == "categories":
                    values["position"] = position
                made[(section, entry["key"])] = kind.model.create(account=account, **values)
        for route in data.get("routes", []):
            r = Route.create(
                account=account,
                subject=made.get(("subjects", route.get("subject"))),
                category=made.get(("categories", route.get("category"))),
                when=route.get("when", "always"),
            )
            for position, key in enumerate(dict.fromkeys(route["vendors"])):
                RouteVendor.create(route=r, vendor=made[("vendors", key)], position=position)
        entries = data.get("dispatches", [])
        for done, entry in enumerate(entries, 1):
            if progress:
                progress(done, len(entries))
            subject = made.get(("subjects", entry.get("subject")))
            category = made.get(("categories", entry.get("category")))
            token = dispatch.status_token(instance, entry["reference"])
            d = Dispatch.create(
                account=account,
                reference=entry["reference"],
                subject=subject,
                category=category,
                subject_label=subject.name if subject else "",
                category_label=category.name if category else "",
                caller_name=instance.keys.encrypt(entry["caller_name"]),
                caller_phone=instance.keys.encrypt(entry["caller_phone"]),
                caller_phone_digest=instance.keys.sign(
                    "phone-digest", "".join(c for c in entry["caller_phone"] if c.isdigit())
                ),
                description=instance.keys.encrypt(entry["description"]),
                status=entry["status"],
                status_token_hash=hash_token(token),
                created_at=parse_iso(entry["created_at"]),
                updated_at=parse_iso(entry["created_at"]),
            )
            last_vendor = None
            for e in entry.get("events", []):
                vendor = made.get(("vendors", e.get("vendor")))
                last_vendor = vendor or last_vendor
                DispatchEvent.create(
                    dispatch=d,
                    account=account,
                    at=parse_iso(e["at"]),
                    kind=e["kind"],
                    vendor=vendor,
                    detail=str(e.get("detail") or ""),
                )
            if d.status in dispatch.WAITING:
                # no vendor here is waiting on these links: the owner decides what next
                DispatchEvent.create(
                    dispatch=d,
                    account=account,
                    at=clock.now(),
                    kind="unassigned",
                    detail="imported while a vendor was being asked; reassign or close it",
                )
                d.status = "unassigned"
            elif last_vendor is not None and d.status in ("accepted", "resolved"):
                d.vendor = last_vendor
            d.save()
    return account

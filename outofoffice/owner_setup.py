"""What the owner sets up: vendors, subjects, categories, routes and settings.

Every function takes the account and touches only that account's rows: an id from
another account is "not found", never someone else's data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass

import peewee

from outofoffice import accounts, countries, db, routing, sms
from outofoffice.dispatch import phone_problem
from outofoffice.errors import ValidationError
from outofoffice.keys import new_push_topic
from outofoffice.models import Account, Category, Logo, Route, RouteVendor, Subject, Vendor
from outofoffice.notify import NOTIFY

MAX_IMPORT_ROWS = 5000


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text | email | phone | textarea | checkbox
    required: bool = False
    maximum: int = 100
    help: str = ""


@dataclass(frozen=True)
class Kind:
    """One kind of thing the owner keeps a list of."""

    name: str  # URL segment: vendors, subjects, categories
    model: type[peewee.Model]
    singular: str
    fields: tuple[Field, ...]
    order: str = "name"


KINDS = {
    "vendors": Kind(
        "vendors",
        Vendor,
        "vendor",
        (
            Field("name", "Name", required=True),
            Field("company", "Company"),
            Field("email", "Email", "email", required=True, maximum=254, help="Requests go here."),
            Field("phone", "Phone", "phone", maximum=32),
            Field("notes", "Notes", "textarea", maximum=2000, help="Only you see these."),
            Field("active", "Active", "checkbox", help="Inactive vendors are skipped."),
        ),
    ),
    "subjects": Kind(
        "subjects",
        Subject,
        "subject",
        (
            Field("name", "Name", required=True),
            Field("address", "Address", maximum=255),
            Field("reference", "Your reference", help="A code of yours, e.g. ELM."),
        ),
    ),
    "categories": Kind(
        "categories",
        Category,
        "category",
        (
            Field("name", "Name", required=True),
            Field(
                "description",
                "Safety and self-help text",
                "textarea",
                maximum=1000,
                help='Callers see it before they send, e.g. "Shut the water valve under the sink."',
            ),
            Field("emergency", "Emergency", "checkbox", help="Vendors see URGENT."),
        ),
        order="position",
    ),
}


def labels(account: Account) -> dict[str, str]:
    """The industry's words (SPEC section 5)."""
    return accounts.labels(account.industry)


def items(account: Account, kind: Kind) -> list:
    model = kind.model
    return list(
        model.select()
        .where(model.account == account)
        .order_by(getattr(model, kind.order), model.id)
    )


def get(account: Account, kind: Kind, item_id) -> peewee.Model | None:
    model = kind.model
    item_id = db.parse_id(item_id)
    if item_id is None:
        return None
    return model.get_or_none(model.id == item_id, model.account == account)


def clean(kind: Kind, form: dict) -> dict:
    """Validated values for ``kind`` from a form; ValidationError names each field."""
    values: dict = {}
    errors: dict[str, str] = {}
    for field in kind.fields:
        if field.kind == "checkbox":
            values[field.name] = str(form.get(field.name, "")).lower() in ("1", "on", "true", "yes")
            continue
        value = str(form.get(field.name) or "").strip()
        values[field.name] = value
        what = field.label.lower()
        if not value:
            if field.required:
                errors[field.name] = f"Enter the {what}."
            continue
        if field.kind == "textarea":
            if len(value) > field.maximum:
                errors[field.name] = f"Use at most {field.maximum} characters."
        elif problem := accounts.text_problem(value, f"the {what}", field.maximum):
            errors[field.name] = problem
        elif field.kind == "email":
            values[field.name] = value = value.lower()
            if problem := accounts.email_problem(value):
                errors[field.name] = problem
        elif field.kind == "phone" and (problem := phone_problem(value)):
            errors[field.name] = problem
    if errors:
        raise ValidationError(errors)
    return values


CHANNEL_CHOICES = ("sms", "push")  # email is every vendor's


def vendor_channels(form: dict, offered: tuple[str, ...], item=None) -> list[str]:
    """The channels ticked on a vendor's form (``channel_sms``, ``channel_push``) among
    those this installation ``offered``; one it does not offer now keeps its old
    setting. SMS needs a phone in international form: the error sits by the phone."""
    old = set(item.channels or ()) if item is not None else set()
    ticked = {c for c in CHANNEL_CHOICES if str(form.get(f"channel_{c}", "")).lower() == "on"}
    chosen = [c for c in CHANNEL_CHOICES if (c in ticked if c in offered else c in old)]
    if "sms" in offered and "sms" in ticked and not sms.e164(str(form.get("phone") or "")):
        raise ValidationError(
            {"phone": "For SMS, enter the phone in international form, e.g. +1 555 010 0199."}
        )
    return ["email", *chosen]


def save(
    account: Account, kind: Kind, form: dict, item=None, offered: tuple[str, ...] | None = None
) -> peewee.Model:
    """Create (item None) or update one item. ``offered``: for a vendor, the channels
    besides email this installation sends by, read from the form (None: left alone)."""
    channels, channel_errors = None, {}
    if kind.model is Vendor and offered is not None:
        try:
            channels = vendor_channels(form, offered, item)
        except ValidationError as exc:
            channel_errors = exc.errors
    try:
        values = clean(kind, form)
    except ValidationError as exc:
        raise ValidationError(channel_errors | exc.errors) from None
    if channel_errors:
        raise ValidationError(channel_errors)
    if channels is not None:
        values["channels"] = channels
    with db.write():
        if item is None:
            if kind.model is Category:
                values["position"] = len(items(account, kind))
            if kind.model is Vendor:
                if "active" not in form:
                    values["active"] = True
                values["push_topic"] = new_push_topic()  # unguessable: it is the password
            return kind.model.create(account=account, **values)
        for name, value in values.items():
            setattr(item, name, value)
        item.save(only=[kind.model._meta.fields[name] for name in values])
        return item


def delete(account: Account, kind: Kind, item) -> None:
    """Delete one item; routes lose it (a route left empty is kept for the owner to fix),
    and dispatches keep their history through their labels."""
    with db.write():
        item.delete_instance()


def import_subjects(account: Account, text: str) -> int:
    """Import ``name,address,reference`` lines (a header line is optional). Every bad line
    is reported and nothing is stored unless all lines are good."""
    kind = KINDS["subjects"]
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    except csv.Error as exc:
        raise ValidationError({"file": f"This is not a CSV file we can read: {exc}."}) from None
    if rows and [c.strip().lower() for c in rows[0][:3]] == ["name", "address", "reference"]:
        rows = rows[1:]
        first_line = 2
    else:
        first_line = 1
    errors: dict[str, str] = {}
    good = []
    if len(rows) > MAX_IMPORT_ROWS:
        raise ValidationError({"file": f"Import at most {MAX_IMPORT_ROWS} lines at a time."})
    for number, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > 3:
            errors[f"line {number}"] = f"expected name,address,reference; got {len(row)} columns"
            continue
        row = [*row, "", ""][:3]
        try:
            good.append(clean(kind, dict(zip(("name", "address", "reference"), row, strict=True))))
        except ValidationError as exc:
            errors[f"line {number}"] = " ".join(exc.errors.values())
    if errors:
        raise ValidationError(errors)
    if not good:
        raise ValidationError({"file": "The file has no lines to import."})
    with db.write():
        for values in good:
            Subject.create(account=account, **values)
    return len(good)


# --- routes ---------------------------------------------------------------------------


def routes(account: Account) -> list[Route]:
    return list(Route.select().where(Route.account == account).order_by(Route.id))


def chain(route: Route) -> list[Vendor]:
    return [
        rv.vendor
        for rv in RouteVendor.select(RouteVendor, Vendor)
        .join(Vendor)
        .where(RouteVendor.route == route)
        .order_by(RouteVendor.position)
    ]


def get_route(account: Account, route_id) -> Route | None:
    route_id = db.parse_id(route_id)
    if route_id is None:
        return None
    return Route.get_or_none(Route.id == route_id, Route.account == account)


def create_route(
    account: Account, subject_id: str, category_id: str, when: str, vendor_ids: list[str]
) -> Route:
    """A route: subject (or any) x category (or any) x when -> vendors in this order."""
    errors = {}
    subject = get(account, KINDS["subjects"], subject_id) if subject_id else None
    if subject_id and subject is None:
        errors["subject"] = "Choose one of your subjects, or any."
    category = get(account, KINDS["categories"], category_id) if category_id else None
    if category_id and category is None:
        errors["category"] = "Choose one of your categories, or any."
    if when not in routing.WHEN:
        errors["when"] = "Choose always, business hours or after hours."
    vendors = []
    for vendor_id in vendor_ids:
        vendor = get(account, KINDS["vendors"], vendor_id) if vendor_id else None
        if vendor_id and vendor is None:
            errors["vendors"] = "Choose your own vendors."
        elif vendor is not None and vendor not in vendors:
            vendors.append(vendor)
    if not vendors and "vendors" not in errors:
        errors["vendors"] = "Choose at least one vendor."
    if errors:
        raise ValidationError(errors)
    with db.write():
        route = Route.create(account=account, subject=subject, category=category, when=when)
        for position, vendor in enumerate(vendors):
            RouteVendor.create(route=route, vendor=vendor, position=position)
    return route


def _locked_chain(route: Route) -> list[Vendor]:
    """The route's chain, read under the route's row lock: two edits of one chain at
    once (two tabs, two owners' devices) take turns, and neither is lost."""
    if db.locked(Route, route.id) is None:
        raise ValidationError({"vendor": "This route no longer exists."})
    return chain(route)


def _renumber(route: Route, vendors: list[Vendor]) -> None:
    RouteVendor.delete().where(RouteVendor.route == route).execute()
    for position, vendor in enumerate(vendors):
        RouteVendor.create(route=route, vendor=vendor, position=position)


def move_vendor(account: Account, route: Route, vendor_id, offset: int) -> None:
    """Move a vendor up (-1) or down (+1) the route's chain."""
    with db.write():
        vendors = _locked_chain(route)
        index = next((i for i, v in enumerate(vendors) if str(v.id) == str(vendor_id)), None)
        if index is None:
            raise ValidationError({"vendor": "That vendor is not on this route."})
        target = min(max(index + offset, 0), len(vendors) - 1)
        vendors.insert(target, vendors.pop(index))
        _renumber(route, vendors)


def add_vendor(account: Account, route: Route, vendor_id) -> None:
    vendor = get(account, KINDS["vendors"], vendor_id)
    if vendor is None:
        raise ValidationError({"vendor": "Choose one of your vendors."})
    with db.write():
        vendors = _locked_chain(route)
        if vendor not in vendors:
            _renumber(route, [*vendors, vendor])


def remove_vendor(account: Account, route: Route, vendor_id) -> None:
    with db.write():
        _renumber(route, [v for v in _locked_chain(route) if str(v.id) != str(vendor_id)])


def delete_route(account: Account, route: Route) -> None:
    with db.write():
        route.delete_instance()


def can_route(account: Account) -> bool:
    """True once some route has an active vendor: a request can reach someone."""
    return (
        RouteVendor.select()
        .join(Route)
        .switch(RouteVendor)
        .join(Vendor)
        .where(Route.account == account, Vendor.active == True)  # noqa: E712
        .exists()
    )


# --- settings -------------------------------------------------------------------------


SETTINGS_FIELDS = (
    "name",
    "business_name",
    "contact_phone",
    "timezone",
    "country",
    "notify",
    "digest_hour",
    "escalate_after_minutes",
    "brand_colour",
)
SETTINGS_NUMBERS = ("digest_hour", "escalate_after_minutes")
SETTINGS_TEXT = tuple(key for key in SETTINGS_FIELDS if key not in SETTINGS_NUMBERS)
# The colours a firm may give its pages: each keeps white text readable (4.5:1).
BRAND_COLOURS = ("blue", "green", "red", "purple", "teal", "orange", "slate", "black")
LOGO_MAX = 48 * 1024  # with the form around it, under the 64 KiB request limit
LOGO_TYPES = {  # the first bytes of each image format the pages accept
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def save_settings(
    account: Account, form: dict, business_hours: dict, texts_callers: bool = False
) -> Account:
    """Profile, contact phone, timezone, business hours, notifications, escalation;
    ``texts_callers``: the installation sends SMS, so the form offers the caller SMS
    switch (otherwise it is left as it was)."""
    errors: dict[str, str] = {}
    values = {k: str(form.get(k) or "").strip() for k in SETTINGS_FIELDS}
    for key, what in (("name", "your name"), ("business_name", "the business name")):
        if problem := accounts.text_problem(values[key], what):
            errors[key] = problem
    if values["contact_phone"] and (problem := phone_problem(values["contact_phone"])):
        errors["contact_phone"] = problem
    if values["timezone"] not in accounts.timezones():
        errors["timezone"] = "Choose a time zone such as Europe/London or America/New_York."
    # one the list offers, or the one it has (from its time zone, perhaps not listed)
    if values["country"] not in (*countries.COUNTRIES, account.country):
        errors["country"] = "Choose the country your callers are in from the list."
    values["brand_colour"] = values["brand_colour"] or "blue"
    if values["brand_colour"] not in BRAND_COLOURS:
        errors["brand_colour"] = "Choose one of the colours in the list."
    if values["notify"] not in NOTIFY:
        errors["notify"] = "Choose when to be emailed."
    for key, low, high in (("digest_hour", 0, 23), ("escalate_after_minutes", 1, 1440)):
        if not re.fullmatch(r"[0-9]{1,4}", values[key]) or not low <= int(values[key]) <= high:
            errors[key] = f"Enter a whole number from {low} to {high}."
    try:
        hours = routing.check_business_hours(business_hours)
    except routing.HoursError as exc:
        errors["business_hours"] = str(exc)
    if errors:
        raise ValidationError(errors)
    changed = {key: values[key] for key in SETTINGS_TEXT}
    changed |= {key: int(values[key]) for key in SETTINGS_NUMBERS} | {"business_hours": hours}
    if texts_callers:
        changed["caller_sms"] = bool(form.get("caller_sms"))
    with db.write():
        for key, value in changed.items():
            setattr(account, key, value)
        # only these: a status the admin set meanwhile (disabled, deleting) stays
        account.save(only=[Account._meta.fields[key] for key in changed])
    return account


def _image_type(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in LOGO_TYPES.items() if data.startswith(magic)), None)


def save_logo(account: Account, data: bytes) -> Account:
    """The firm's logo for its callers' and vendors' pages. SVG is refused: it can
    carry script, and the bytes are served from our own origin."""
    if not data:
        raise ValidationError({"logo": "Choose an image file to upload."})
    if len(data) > LOGO_MAX:
        raise ValidationError({"logo": f"Use an image under {LOGO_MAX // 1024} KB."})
    content_type = _image_type(data)
    if content_type is None:
        raise ValidationError({"logo": "Use a PNG, JPEG, GIF or WebP image."})
    digest = hashlib.sha256(data).hexdigest()[:16]
    with db.write():
        Logo.delete().where(Logo.account == account).execute()
        Logo.create(account=account, content_type=content_type, data=data)
        account.logo_hash = digest
        account.save(only=[Account.logo_hash])
    return account


def remove_logo(account: Account) -> None:
    with db.write():
        Logo.delete().where(Logo.account == account).execute()
        account.logo_hash = ""
        account.save(only=[Account.logo_hash])


def logo(slug: str, digest: str) -> Logo | None:
    """The logo a page names: the account's current one, or None."""
    return (
        Logo.select()
        .join(Account)
        .where(Account.slug == slug, Account.logo_hash == digest, Account.logo_hash != "")
        .first()
    )

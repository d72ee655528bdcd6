"""The owner's dashboard: overview, routing setup, settings, dispatch history.

Handlers are thin: they find the signed-in owner, call owner_setup / dispatch /
portability with that account (never an id from another account), and render.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import date, datetime, time, timedelta

import bottle

from outofoffice import (
    accounts,
    billing,
    clock,
    countries,
    db,
    dispatch,
    dispatch_list,
    owner_setup,
    portability,
    push,
    routing,
    timeline,
)
from outofoffice.billing import state as billing_state
from outofoffice.errors import ValidationError
from outofoffice.models import Dispatch, DispatchEvent
from outofoffice.web.context import (
    client_ip,
    current,
    fail,
    instance,
    page,
    require_owner,
    see_other,
    session_cookie,
)

# (label, path); a label of None takes the account's subjects label (SPEC section 5).
AREAS = [
    ("Overview", "/dashboard"),
    ("Dispatches", "/dashboard/dispatches"),
    ("Vendors", "/dashboard/vendors"),
    (None, "/dashboard/subjects"),
    ("Categories", "/dashboard/categories"),
    ("Routes", "/dashboard/routes"),
    ("Reports", "/dashboard/reports"),
    ("Webhooks", "/dashboard/webhooks"),
    ("Settings", "/dashboard/settings"),
    ("Account", "/dashboard/account"),
    ("Billing", "/dashboard/billing"),
]
PAGE_SIZE = 50


def dashboard_page(template: str, status: int = 200, **context) -> str:
    owner = require_owner()
    labels = owner_setup.labels(owner)
    rules = {route.rule for route in bottle.request.app.routes if route.method == "GET"}
    areas = [(label or labels["subjects"], path) for label, path in AREAS if path in rules]
    config = instance().config
    banner = ""
    if billing_on := billing.enabled(config):
        now = clock.now()
        banner = billing_state.banner(billing_state.state_of(owner, config, now), now)
    return page(
        template,
        status=status,
        areas=areas,
        labels=labels,
        billing_on=billing_on,
        billing_banner=banner,
        **context,
    )


def form_dict() -> dict[str, str]:
    forms = bottle.request.forms
    return {key: forms.getunicode(key, "") or "" for key in forms}


# --- overview -------------------------------------------------------------------------


def overview():
    owner = require_owner()
    kinds = owner_setup.KINDS
    labels = owner_setup.labels(owner)
    checklist = [
        ("Add a vendor", "/dashboard/vendors", bool(owner_setup.items(owner, kinds["vendors"]))),
        (
            f"Add your {labels['subjects'].lower()}",
            "/dashboard/subjects",
            bool(owner_setup.items(owner, kinds["subjects"])),
        ),
        (
            "Check the categories and their safety text",
            "/dashboard/categories",
            bool(owner_setup.items(owner, kinds["categories"])),
        ),
        ("Add a route with a vendor", "/dashboard/routes", owner_setup.can_route(owner)),
        ("Set the phone number vendors see", "/dashboard/settings", bool(owner.contact_phone)),
    ]
    recent = list(
        Dispatch.select().where(Dispatch.account == owner).order_by(Dispatch.id.desc()).limit(10)
    )
    return dashboard_page(
        "dashboard/overview.html",
        routing_url=instance().routing_url(owner.slug),
        checklist=checklist if not owner_setup.can_route(owner) else [],
        counts=dispatch_list.counts(owner),
        needs=dispatch_list.lines(instance(), dispatch_list.needs_you(owner)),
        recent=dispatch_list.lines(instance(), recent),
    )


# --- vendors, subjects, categories ----------------------------------------------------


def _kind(name: str) -> owner_setup.Kind:
    return owner_setup.KINDS[name]


def _item_or_404(owner, kind, item_id):
    item = owner_setup.get(owner, kind, item_id)
    if item is None:
        raise fail(404, f"There is no such {kind.singular}.")
    return item


def list_items(name: str, form=None, errors=None, status=200, import_errors=None):
    owner = require_owner()
    kind = _kind(name)
    return dashboard_page(
        "dashboard/items.html",
        status=status,
        kind=kind,
        items=owner_setup.items(owner, kind),
        form=form or {"active": "on"},
        errors=errors or {},
        import_errors=import_errors or {},
        offered=_offered() if name == "vendors" else (),
    )


def create_item(name: str):
    owner = require_owner()
    form = form_dict()
    try:
        owner_setup.save(
            owner, _kind(name), form, offered=_offered() if name == "vendors" else None
        )
    except ValidationError as exc:
        return list_items(name, form, exc.errors, 400)
    see_other(f"/dashboard/{name}")


def _offered() -> tuple[str, ...]:
    """The channels besides email this installation sends by."""
    return tuple(c for c in owner_setup.CHANNEL_CHOICES if c in instance().deliverers)


def _vendor_page(item, form) -> dict:
    """What a vendor's page adds: their channels, and how their phone subscribes."""
    if form is not None:
        for channel in owner_setup.CHANNEL_CHOICES:
            form.setdefault(f"channel_{channel}", "on" if channel in item.channels else "")
    offered = _offered()
    url = push.subscribe_url(instance(), item) if "push" in offered else ""
    return {
        "offered": offered,
        "subscribe_url": url,
        "qr": push.qr_svg(url) if url and "push" in item.channels else "",
        "pushed": bottle.request.query.get("push", ""),
    }


def edit_item(name: str, item_id: int, form=None, errors=None, status=200):
    owner = require_owner()
    kind = _kind(name)
    item = _item_or_404(owner, kind, item_id)
    values = form or {f.name: getattr(item, f.name) for f in kind.fields}
    for field in kind.fields:
        if field.kind == "checkbox" and form is None:
            values[field.name] = "on" if getattr(item, field.name) else ""
    vendor = _vendor_page(item, values if form is None else {}) if name == "vendors" else {}
    return dashboard_page(
        "dashboard/vendor.html" if vendor else "dashboard/item.html",
        status=status,
        kind=kind,
        item=item,
        form=values,
        errors=errors or {},
        **vendor,
    )


def update_item(name: str, item_id: int):
    owner = require_owner()
    kind = _kind(name)
    item = _item_or_404(owner, kind, item_id)
    form = form_dict()
    offered = _offered() if name == "vendors" else None
    try:
        owner_setup.save(owner, kind, form, item, offered=offered)
    except ValidationError as exc:
        return edit_item(name, item_id, form, exc.errors, 400)
    see_other(f"/dashboard/{name}")


def vendor_push(item_id: int, change: str):
    """Send a test push to a vendor, or give them a new topic (a lost phone)."""
    owner = require_owner()
    vendor = _item_or_404(owner, _kind("vendors"), item_id)
    if not push.is_on(instance()):
        raise fail(404, "Push notifications are off on this installation.")
    if change == "test":
        push.send_test(instance(), vendor)
    else:
        push.renew_topic(vendor)
    see_other(f"/dashboard/vendors/{vendor.id}?push={'sent' if change == 'test' else 'new'}")


CONSEQUENCES = {
    "vendors": "Routes stop asking this vendor. Past dispatches keep their history.",
    "subjects": "Routes for it are deleted too. Past dispatches keep its name.",
    "categories": "Routes for it are deleted too. Past dispatches keep its name.",
}


def confirm_delete_item(name: str, item_id: int):
    """A page that asks before a delete: the list's Delete button leads here, so one
    slip of a thumb never removes anything, with or without JavaScript."""
    owner = require_owner()
    kind = _kind(name)
    item = _item_or_404(owner, kind, item_id)
    label = owner_setup.labels(owner)["subject"].lower() if name == "subjects" else kind.singular
    return dashboard_page(
        "dashboard/confirm.html",
        question=f"Delete the {label} {item.name}?",
        consequence=CONSEQUENCES[name],
        action=f"/dashboard/{name}/{item_id}/delete",
        button=f"Delete {item.name}",
        back=f"/dashboard/{name}",
    )


def delete_item(name: str, item_id: int):
    owner = require_owner()
    kind = _kind(name)
    owner_setup.delete(owner, kind, _item_or_404(owner, kind, item_id))
    see_other(f"/dashboard/{name}")


def import_subjects():
    owner = require_owner()
    upload = bottle.request.files.get("file")
    if upload is not None:
        raw = upload.file.read(1024 * 1024)
    else:
        raw = (bottle.request.forms.getunicode("csv", "") or "").encode()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return list_items(
            "subjects", import_errors={"file": "Save the file as UTF-8 CSV."}, status=400
        )
    try:
        count = owner_setup.import_subjects(owner, text)
    except ValidationError as exc:
        return list_items("subjects", import_errors=exc.errors, status=400)
    see_other(f"/dashboard/subjects?imported={count}")


# --- routes ---------------------------------------------------------------------------


def routes_page(form=None, errors=None, status=200):
    owner = require_owner()
    kinds = owner_setup.KINDS
    routes = [(r, owner_setup.chain(r)) for r in owner_setup.routes(owner)]
    return dashboard_page(
        "dashboard/routes.html",
        status=status,
        routes=routes,
        subjects=owner_setup.items(owner, kinds["subjects"]),
        categories=owner_setup.items(owner, kinds["categories"]),
        vendors=owner_setup.items(owner, kinds["vendors"]),
        when=routing.WHEN,
        form=form or {},
        errors=errors or {},
    )


def create_route():
    owner = require_owner()
    forms = bottle.request.forms
    form = form_dict()
    vendor_ids = [v for v in forms.getall("vendor") if v]
    try:
        owner_setup.create_route(
            owner,
            form.get("subject", ""),
            form.get("category", ""),
            form.get("when", ""),
            vendor_ids,
        )
    except ValidationError as exc:
        return routes_page(form, exc.errors, 400)
    see_other("/dashboard/routes")


def confirm_delete_route(route_id: int):
    owner = require_owner()
    if owner_setup.get_route(owner, route_id) is None:
        raise fail(404, "There is no such route.")
    return dashboard_page(
        "dashboard/confirm.html",
        question="Delete this route?",
        consequence="Requests it would take go to the next route that fits, or to nobody.",
        action=f"/dashboard/routes/{route_id}/delete",
        button="Delete the route",
        back="/dashboard/routes",
    )


def change_route(route_id: int, change: str):
    owner = require_owner()
    route = owner_setup.get_route(owner, route_id)
    if route is None:
        raise fail(404, "There is no such route.")
    vendor_id = bottle.request.forms.get("vendor", "")
    try:
        if change == "delete":
            owner_setup.delete_route(owner, route)
        elif change == "add":
            owner_setup.add_vendor(owner, route, vendor_id)
        elif change == "remove":
            owner_setup.remove_vendor(owner, route, vendor_id)
        else:
            offset = -1 if bottle.request.forms.get("direction") == "up" else 1
            owner_setup.move_vendor(owner, route, vendor_id, offset)
    except ValidationError as exc:
        return routes_page(errors=exc.errors, status=400)
    see_other("/dashboard/routes")


# --- settings -------------------------------------------------------------------------


def _hours_from_form(forms) -> dict:
    """Weekday rows of time inputs (start, end; repeated for a second interval) and a
    list of holiday dates; a row left empty is a closed day."""
    hours: dict = {}
    for day in routing.WEEKDAYS:
        starts = forms.getall(f"{day}_start")
        ends = forms.getall(f"{day}_end")
        hours[day] = [
            [start.strip(), end.strip()]
            for start, end in zip(starts, ends, strict=False)
            if start.strip() or end.strip()
        ]
    hours["holidays"] = sorted({d.strip() for d in forms.getall("holiday") if d.strip()})
    return hours


def _timezone_groups() -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for name in sorted(accounts.timezones()):
        if "/" in name and not name.startswith(("Etc/", "SystemV/")):
            groups.setdefault(name.split("/", 1)[0], []).append(name)
    return [(region, names) for region, names in sorted(groups.items())] + [("Other", ["UTC"])]


def _texts_callers() -> bool:
    return "sms" in instance().deliverers


def country_choices(owner) -> list[tuple[str, str]]:
    """The countries to choose from, with the firm's own first if the list lacks it."""
    listed = countries.choices()
    if owner.country and owner.country not in countries.COUNTRIES:
        listed.insert(0, (owner.country, owner.country))
    return listed


def settings_page(form=None, errors=None, status=200, saved=False, hours=None):
    owner = require_owner()
    if form is None:
        form = {key: str(getattr(owner, key)) for key in owner_setup.SETTINGS_FIELDS}
        form["caller_sms"] = "on" if owner.caller_sms else ""
    hours = hours or owner.business_hours or routing.DEFAULT_HOURS
    return dashboard_page(
        "dashboard/settings.html",
        status=status,
        form=form,
        errors=errors or {},
        weekdays=routing.WEEKDAYS,
        hours=hours,
        timezones=_timezone_groups(),
        countries=country_choices(owner),
        colours=owner_setup.BRAND_COLOURS,
        texts_callers=_texts_callers(),
        logo_max_kb=owner_setup.LOGO_MAX // 1024,
        saved=saved or bottle.request.query.get("saved") == "1",
        email_sent=bottle.request.query.getunicode("email_sent", "") or "",
    )


def save_logo():
    owner = require_owner()
    if bottle.request.forms.get("remove"):
        owner_setup.remove_logo(owner)
        see_other("/dashboard/settings?saved=1")
    upload = bottle.request.files.get("logo")
    data = upload.file.read(owner_setup.LOGO_MAX + 1) if upload is not None else b""
    try:
        owner_setup.save_logo(owner, data)
    except ValidationError as exc:
        return settings_page(errors=exc.errors, status=400)
    see_other("/dashboard/settings?saved=1")


def change_email():
    require_owner()
    session, _ = current()
    new_email = bottle.request.forms.getunicode("email", "") or ""
    try:
        sent_to = accounts.request_email_change(instance(), session, new_email, client_ip())
    except ValidationError as exc:
        return settings_page(errors=exc.errors, status=400)
    see_other(f"/dashboard/settings?email_sent={urllib.parse.quote(sent_to)}")


def sign_out_everywhere():
    accounts.end_all_sessions(require_owner())
    see_other("/login", session_cookie("", 0))


def save_settings():
    owner = require_owner()
    form = form_dict()
    hours = _hours_from_form(bottle.request.forms)
    try:
        owner_setup.save_settings(owner, form, hours, texts_callers=_texts_callers())
    except ValidationError as exc:
        return settings_page(form, exc.errors, 400, hours=hours)
    see_other("/dashboard/settings?saved=1")


# --- dispatch history -----------------------------------------------------------------


def _filters(owner) -> tuple[dict, dict]:
    query = bottle.request.query
    raw = {
        k: (query.getunicode(k, "") or "").strip()
        for k in ("status", "subject", "category", "from", "to")
    }
    errors = {}
    filters: dict = {}
    if raw["status"]:
        if raw["status"] not in dispatch.STATUSES:
            errors["status"] = "Choose a status."
        filters["status"] = raw["status"]
    for key in ("subject", "category"):
        if raw[key]:
            filters[key] = raw[key]
    for key in ("from", "to"):
        if raw[key]:
            try:
                day = date.fromisoformat(raw[key]) + timedelta(days=key == "to")
            except (ValueError, OverflowError):
                errors[key] = "Use a date such as 2026-11-27."
                continue
            local = datetime.combine(day, time())
            utc = local.replace(tzinfo=routing.ZoneInfo(owner.timezone)).astimezone(
                routing.ZoneInfo("UTC")
            )
            filters[key] = utc.replace(tzinfo=None)
    return raw, filters | ({"invalid": True} if errors else {})


def dispatches_page():
    owner = require_owner()
    raw, filters = _filters(owner)
    query = portability.history_query(owner, filters)
    words = (bottle.request.query.getunicode("q", "") or "")[:100]
    if words.strip():  # the list, its pages and its CSV show what the search found
        query = query.where(Dispatch.id.in_(dispatch_list.search(instance(), query, words)))
    if bottle.request.query.get("format") == "csv":
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header(
            "Content-Disposition", f'attachment; filename="{owner.slug}-dispatches.csv"'
        )
        return portability.history_csv(instance(), owner, query)
    number = min(db.parse_id(bottle.request.query.get("page", "1")) or 1, 10**6)
    total = query.count()
    rows = list(query.paginate(number, PAGE_SIZE))
    kinds = owner_setup.KINDS
    return dashboard_page(
        "dashboard/dispatches.html",
        rows=dispatch_list.lines(instance(), rows),
        words=words,
        filters=raw,
        statuses=dispatch.STATUSES,
        subjects=owner_setup.items(owner, kinds["subjects"]),
        categories=owner_setup.items(owner, kinds["categories"]),
        number=number,
        pages=max(1, -(-total // PAGE_SIZE)),
        total=total,
        csv_query=bottle.request.query_string,
    )


def _dispatch_or_404(owner, dispatch_id):
    d = dispatch.for_owner(owner, dispatch_id)
    if d is None:
        raise fail(404, "There is no such dispatch.")
    return d


def dispatch_page(dispatch_id: int, errors=None, status=200):
    owner = require_owner()
    d = _dispatch_or_404(owner, dispatch_id)
    events = list(
        DispatchEvent.select().where(DispatchEvent.dispatch == d).order_by(DispatchEvent.id)
    )
    return dashboard_page(
        "dashboard/dispatch.html",
        status=status,
        d=d,
        caller=dispatch.caller(instance(), d),
        events=events,
        vendors=owner_setup.items(owner, owner_setup.KINDS["vendors"]),
        finished=d.status in dispatch.FINISHED,
        errors=errors or {},
        state=timeline.status(d),
        line=timeline.owner_line,
        local=lambda at: timeline.when(owner, at, seconds=True),
    )


def reassign(dispatch_id: int):
    owner = require_owner()
    d = _dispatch_or_404(owner, dispatch_id)
    try:
        dispatch.reassign(instance(), owner, d, bottle.request.forms.get("vendor", ""))
    except ValidationError as exc:
        return dispatch_page(dispatch_id, exc.errors, 400)
    see_other(f"/dashboard/dispatches/{d.id}")


def close(dispatch_id: int):
    owner = require_owner()
    d = _dispatch_or_404(owner, dispatch_id)
    dispatch.close(instance(), d, bottle.request.forms.getunicode("note", "") or "")
    see_other(f"/dashboard/dispatches/{d.id}")


# --- the owner's own data: see it, take it, delete it ----------------------------------


def account_page(errors=None, status=200):
    owner = require_owner()
    download = bottle.request.query.get("download")
    if download == "export":
        bottle.response.content_type = "application/json; charset=utf-8"
        bottle.response.set_header(
            "Content-Disposition", f'attachment; filename="{owner.slug}-export.json"'
        )
        return json.dumps(portability.export(instance(), owner), indent=2, ensure_ascii=False)
    if download == "history":
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header(
            "Content-Disposition", f'attachment; filename="{owner.slug}-dispatches.csv"'
        )
        return portability.history_csv(instance(), owner, portability.history_query(owner, {}))
    kinds = owner_setup.KINDS
    counts = {
        label: len(owner_setup.items(owner, kinds[name]))
        for name, label in (
            ("vendors", "Vendors"),
            ("subjects", owner_setup.labels(owner)["subjects"]),
            ("categories", "Categories"),
        )
    }
    counts["Routes"] = len(owner_setup.routes(owner))
    counts["Dispatches"] = Dispatch.select().where(Dispatch.account == owner).count()
    return dashboard_page(
        "dashboard/account.html", status=status, counts=counts, errors=errors or {}
    )


def delete_account():
    owner = require_owner()
    if (bottle.request.forms.getunicode("confirm", "") or "").strip().lower() != owner.slug:
        return account_page({"confirm": f"Type {owner.slug} to confirm."}, 400)
    accounts.request_deletion(owner, instance())
    bottle.request.environ.pop("oop.current", None)  # signed out from here on
    bottle.response.set_header("Set-Cookie", session_cookie("", 0))
    return page("account_deleted.html", business=owner.business_name)


def install(app: bottle.Bottle) -> None:
    app.get("/dashboard", callback=overview)
    for name in owner_setup.KINDS:
        base = f"/dashboard/{name}"
        app.get(base, callback=lambda name=name: list_items(name))
        app.post(base, callback=lambda name=name: create_item(name))
        app.get(
            base + "/<item_id:int>", callback=lambda item_id, name=name: edit_item(name, item_id)
        )
        app.post(
            base + "/<item_id:int>", callback=lambda item_id, name=name: update_item(name, item_id)
        )
        app.get(
            base + "/<item_id:int>/delete",
            callback=lambda item_id, name=name: confirm_delete_item(name, item_id),
        )
        app.post(
            base + "/<item_id:int>/delete",
            callback=lambda item_id, name=name: delete_item(name, item_id),
        )
    app.post("/dashboard/subjects/import", callback=import_subjects)
    for change in ("test", "topic"):
        app.post(
            f"/dashboard/vendors/<item_id:int>/push-{change}",
            callback=lambda item_id, change=change: vendor_push(item_id, change),
        )
    app.get("/dashboard/routes", callback=routes_page)
    app.post("/dashboard/routes", callback=create_route)
    app.get("/dashboard/routes/<route_id:int>/delete", callback=confirm_delete_route)
    for change in ("delete", "add", "remove", "move"):
        app.post(
            f"/dashboard/routes/<route_id:int>/{change}",
            callback=lambda route_id, change=change: change_route(route_id, change),
        )
    app.get("/dashboard/settings", callback=settings_page)
    app.post("/dashboard/settings", callback=save_settings)
    app.post("/dashboard/settings/email", callback=change_email)
    app.post("/dashboard/settings/logo", callback=save_logo)
    app.post("/dashboard/settings/sessions", callback=sign_out_everywhere)
    app.get("/dashboard/dispatches", callback=dispatches_page)
    app.get("/dashboard/dispatches/<dispatch_id:int>", callback=dispatch_page)
    app.post("/dashboard/dispatches/<dispatch_id:int>/reassign", callback=reassign)
    app.post("/dashboard/dispatches/<dispatch_id:int>/close", callback=close)
    app.get("/dashboard/account", callback=account_page)
    app.post("/dashboard/account/delete", callback=delete_account)

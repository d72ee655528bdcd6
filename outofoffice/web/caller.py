"""The caller's pages: the firm's routing page and the private status page."""

import logging

import bottle

from outofoffice import abuse, billing, clock, db, dispatch, owner_setup, routing, timeline
from outofoffice.errors import ValidationError
from outofoffice.keys import hash_token
from outofoffice.models import Account, Dispatch
from outofoffice.web.context import (
    FirmCard,
    client_ip,
    fail,
    firm_cards,
    for_firm,
    instance,
    page,
    page_cache,
    request_host,
    see_other,
)

log = logging.getLogger(__name__)

FIELDS = ("subject", "category", "name", "phone", "description")
HONEYPOT = "website"
RETRY_AFTER = "30"  # seconds; the page says "send it again" in words
STALE_FORM = (
    "This page was open a long time, or came from another site. Check your request "
    "below and send it again."
)


def slug_from_host() -> str | None:
    """In subdomain mode, <slug>.<domain> names a firm; the bare domain does not."""
    config = instance().config
    if config.server.routing_pages != "subdomain":
        return None
    host = request_host()
    suffix = "." + config.server.domain
    if host.endswith(suffix) and "." not in host[: -len(suffix)]:
        return host[: -len(suffix)] or None
    return None


def routing_slug() -> str | None:
    """The firm whose routing page this request is for, from its address alone (for an
    error page when the database cannot say)."""
    path = bottle.request.path
    if path.startswith("/r/") and "/" not in path[3:]:
        return path[3:] or None
    return slug_from_host() if path == "/" else None


# A firm's id and how often what its pages show has changed: two columns, because
# Python's sqlite3 lets go of the interpreter lock for each column it reads, and under
# load every one of those is a wait to get it back.
FIRM_VERSION = (
    'SELECT "a"."id", COALESCE("v"."version", 0) FROM "account" AS "a" '
    'LEFT JOIN "pages_version" AS "v" ON "v"."account_id" = "a"."id" WHERE "a"."slug" = ?'
)


def _account(slug: str) -> Account:
    account = db.first(Account, 'SELECT * FROM "account" WHERE "slug" = ?', slug.lower())
    if account is None:
        raise fail(404, "There is no routing page at this address. Check the link with the firm.")
    for_firm(account)
    return account


def _form_page(
    account: Account,
    form: dict,
    errors: dict,
    status: int = 200,
    unavailable: bool = False,
    form_token: str | None = None,
) -> str:
    return page(
        "routing.html",
        status=status,
        account=account,
        labels=owner_setup.labels(account),
        subjects=owner_setup.items(account, owner_setup.KINDS["subjects"]),
        categories=owner_setup.items(account, owner_setup.KINDS["categories"]),
        form=form,
        errors=errors,
        unavailable=unavailable,
        texts_caller=account.caller_sms
        and "sms" in instance().deliverers
        and not billing.sms_paused(instance().config, account),
        action=bottle.request.path,
        form_token=form_token or abuse.form_token(instance().keys, account.id),
    )


def _blank_form_page(slug: str) -> bytes | None:
    """The form as every caller first meets it, made once per version of what the firm's
    page shows, with only the form token made for this request; None when the firm's
    page is something else (unknown, closed)."""
    found = db.database.execute_sql(db.sql(FIRM_VERSION), (slug.lower(),)).fetchone()
    if found is None:
        return None

    def render(placeholder: str) -> tuple[str, FirmCard | None]:
        account = _account(slug)
        if account.status != "active":
            return "", None
        blank = dict.fromkeys(FIELDS, "")
        return _form_page(account, blank, {}, form_token=placeholder), FirmCard.of(account)

    key = ("routing", bottle.request.path, *found)
    if billing.enabled(instance().config):  # limited mode promises callers no texts
        key += (billing.sms_paused(instance().config, _account(slug)),)
    return _cached(key, render, abuse.form_token(instance().keys, found[0]))


def _cached(key: tuple, render, value: str) -> bytes | None:
    """A firm's public page from the app's PageCache (render makes it on a miss, and
    returns no card when the page is something else), answered as the firm's."""
    html, card = page_cache().page(key, render, value)
    if card is None:
        return None
    for_firm(card)
    firm_cards().remember(card)
    bottle.response.content_type = "text/html; charset=utf-8"
    return html


def routing_page(slug: str):
    # the cache keeps one page per firm: another spelling of its address renders as before
    if bottle.request.method == "GET" and not bottle.request.query_string and slug.islower():
        html = _blank_form_page(slug)
        if html is not None:
            return html
    account = _account(slug)
    if account.status != "active":
        status = 403 if bottle.request.method == "POST" else 200
        return page("routing_closed.html", status=status, account=account)
    if bottle.request.method == "GET":
        joined = _joined(account, bottle.request.query.get("joined", ""))
        if joined is not None:
            return page("repeat.html", account=account, d=joined)
        return _form_page(account, dict.fromkeys(FIELDS, ""), {})
    if bottle.request.forms.get(HONEYPOT):  # people never see this field; bots fill it
        raise fail(400, "This request could not be sent. Please phone the firm.")
    form = {k: bottle.request.forms.getunicode(k, "") or "" for k in FIELDS}
    token = bottle.request.forms.get("form_token", "")
    if not abuse.form_token_ok(instance().keys, account.id, token):
        # nothing is sent; the caller keeps what they typed and gets a fresh token
        return _form_page(account, form, {"form": STALE_FORM}, status=400)
    try:
        submission = dispatch.submit(instance(), account, form, client_ip())
    except ValidationError as exc:
        return _form_page(account, form, exc.errors, status=400)
    except db.Unavailable as exc:
        # nothing was stored: the caller keeps what they typed, and the firm's phone
        log.warning("the routing page of %s did not take a request: %s", account.slug, exc)
        bottle.response.set_header("Retry-After", RETRY_AFTER)
        return _form_page(account, form, {}, status=503, unavailable=True)
    except abuse.Refused:
        phone = f" on {account.contact_phone}" if account.contact_phone else ""
        raise fail(
            429, f"Too many requests came from here. Please phone the firm{phone}."
        ) from None
    if submission.repeat:  # a refresh of what follows must not post it a third time
        reference = submission.dispatch.reference
        signature = instance().keys.sign("joined", f"{account.id}.{reference}")
        see_other(f"{bottle.request.path}?joined={reference}.{signature}")
    see_other(f"/s/{submission.status_token}?sent=1")


# What a caller's status page shows changes with the dispatch's history (every change
# writes an event and sets updated_at: their count, since on PostgreSQL ids are not in
# commit order), with what the firm's pages show (the account, its vendors' names) and
# with the firm's local day (times not today carry their day). The firm's id, the
# reference and the creation time keep apart a dispatch made under a deleted one's id.
DISPATCH_VERSION = (
    'SELECT "a"."timezone", "d"."id", "a"."id", "d"."reference", "d"."created_at", '
    '"d"."updated_at", "d"."status", COALESCE("v"."version", 0), '
    '(SELECT COUNT(*) FROM "dispatch_event" AS "e" WHERE "e"."dispatch_id" = "d"."id") '
    'FROM "dispatch" AS "d" JOIN "account" AS "a" ON "a"."id" = "d"."account_id" '
    'LEFT JOIN "pages_version" AS "v" ON "v"."account_id" = "a"."id" '
    """WHERE "d"."status_token_hash" = ? AND "a"."status" = 'active'"""
)
NO_STATUS = "This status link does not work. Check that you copied all of it."


def status_page(token: str) -> bytes:
    """A caller's status page (asked for every 30 seconds while it is open), made once
    per version of what it shows."""
    found = db.database.execute_sql(db.sql(DISPATCH_VERSION), (hash_token(token),)).fetchone()
    if found is None:
        raise fail(404, NO_STATUS)
    live = bottle.request.query.get("live") != "0"
    sent = bottle.request.query.get("sent") == "1"
    today = routing.in_zone(found[0], clock.now()).date()

    def render(_placeholder: str) -> tuple[str, FirmCard]:
        d = dispatch.by_status_token(token)
        if d is None:  # deleted since
            raise fail(404, NO_STATUS)
        for_firm(d.account)
        events = dispatch.events_of(d)
        html = page(
            "status.html",
            d=d,
            account=d.account,
            headline=timeline.caller_headline(d, events),
            steps=timeline.caller_steps(d, events),
            settled=timeline.is_settled(d),
            live=live and not timeline.is_settled(d),
            path=bottle.request.path,
            sent=sent,
            link=instance().url(f"/s/{token}"),
        )
        return html, FirmCard.of(d.account)

    return _cached(("status", *found[1:], today, live, sent), render, "")


def _joined(account: Account, value: str) -> Dispatch | None:
    """The dispatch a repeat joined, named by a signed reference: the page says which
    request it joined and nothing more (a repeat never learns the status link)."""
    reference, _, signature = value.partition(".")
    if not signature or not instance().keys.verify(
        "joined", f"{account.id}.{reference}", signature
    ):
        return None
    return Dispatch.get_or_none(Dispatch.account == account, Dispatch.reference == reference)


def install(app: bottle.Bottle) -> None:
    app.route("/r/<slug>", ["GET", "POST"], routing_page)

    @app.get("/logo/<slug>/<digest>")
    def logo(slug, digest):
        found = owner_setup.logo(slug, digest)
        if found is None:
            raise fail(404, "There is no such image.")
        bottle.response.content_type = found.content_type
        # the address changes with the image, so it may be kept for good
        bottle.response.set_header("Cache-Control", "public, max-age=31536000, immutable")
        # an image, whatever bytes an owner uploaded: never a document, never embedded elsewhere
        bottle.response.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        bottle.response.set_header("Cross-Origin-Resource-Policy", "same-origin")
        return bytes(found.data)

    app.get("/s/<token>", callback=status_page)

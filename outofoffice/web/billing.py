"""The Billing area and Stripe's webhook; installed only when billing is on, so with
``provider = "none"`` neither the page nor the link to it exists."""

from __future__ import annotations

import logging

import bottle

from outofoffice import billing, clock, db, routing
from outofoffice.billing import lifecycle
from outofoffice.billing.base import BillingError, SignatureError
from outofoffice.billing.state import row_of, service_state
from outofoffice.policy import REQUEST_BODY_MAX
from outofoffice.web.context import fail, instance, require_owner, see_other
from outofoffice.web.dashboard import dashboard_page

log = logging.getLogger(__name__)

BASE = "/dashboard/billing"
WEBHOOK_PATH = "/billing/stripe/webhook"
SUBSCRIBED = ("active", "past_due")  # states with a subscription that runs: no checkout
UNREACHABLE = (
    "Stripe could not be reached just now, so nothing has changed. Your routing page and "
    "your vendors' emails carry on as before. Please try again in a few minutes."
)


def _row(owner):
    return row_of(owner, instance().config.billing.trial_days)


def billing_page():
    owner = require_owner()
    options = instance().config.billing
    row = _row(owner)
    now = clock.now()
    state = service_state(row, now, options.grace_days)
    return dashboard_page(
        "dashboard/billing.html",
        row=row,
        state=state,
        days_left=state.days_left(now),
        returned=bottle.request.query.get("checkout") == "done",
        can_subscribe=state.name not in SUBSCRIBED,
        local=lambda at: routing.local_time(owner, at).strftime("%Y-%m-%d %H:%M"),
    )


def _stripe_url(make) -> str:
    try:
        return make(billing.provider_for(instance().config))
    except BillingError as exc:
        log.warning("billing: %s", exc)
        raise fail(502, UNREACHABLE) from None


def checkout():
    owner = require_owner()
    row = _row(owner)
    if service_state(row, clock.now(), instance().config.billing.grace_days).name in SUBSCRIBED:
        raise fail(400, "You have a subscription already: manage it from the billing page.")
    url = _stripe_url(
        lambda provider: provider.checkout_url(
            reference=lifecycle.reference(instance().keys, owner),
            email=owner.email,
            customer_id=row.customer_id,
            trial_ends=row.trial_ends_at,
            return_url=instance().url(BASE),
            key=f"checkout-{owner.id}-{clock.now():%Y%m%d%H}",
        )
    )
    see_other(url)


def portal():
    owner = require_owner()
    row = _row(owner)
    if not row.customer_id:
        raise fail(400, "There is no subscription to manage yet: subscribe first.")
    url = _stripe_url(
        lambda provider: provider.portal_url(
            customer_id=row.customer_id,
            return_url=instance().url(BASE),
            key=f"portal-{owner.id}-{clock.now():%Y%m%d%H%M}",
        )
    )
    see_other(url)


def _plain(status: int, text: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        text + "\n", status=status, headers={"Content-Type": "text/plain; charset=utf-8"}
    )


def webhook():
    """Stripe's events: 400 for anything it did not sign (nothing changes), 200 once an
    event is handled or was before, 500 (Stripe sends it again) when the subscription
    cannot be read or stored now."""
    inst = instance()
    body = bottle.request.body.read(REQUEST_BODY_MAX + 1)
    if len(body) > REQUEST_BODY_MAX:
        return _plain(413, "too large")
    # as the server read it (bottle's get_header fails on bytes that are not UTF-8)
    signature = bottle.request.environ.get("HTTP_STRIPE_SIGNATURE", "")
    try:
        event = billing.provider_for(inst.config).verify(body, signature, clock.timestamp())
    except SignatureError as exc:
        log.warning("%s: refused: %s", WEBHOOK_PATH, exc)
        return _plain(400, f"refused: {exc}")
    try:
        outcome = lifecycle.handle_event(inst, event)
    except (BillingError, db.Unavailable) as exc:
        log.warning("billing: event %s not handled now (Stripe retries): %s", event.id, exc)
        return _plain(500, "not handled now; send it again later")
    return _plain(200, outcome.result)


def install(app: bottle.Bottle) -> None:
    if not billing.enabled(app.config["outofoffice.instance"].config):
        return
    app.get(BASE, callback=billing_page)
    app.post(BASE + "/checkout", callback=checkout)
    app.post(BASE + "/portal", callback=portal)
    app.post(WEBHOOK_PATH, callback=webhook)

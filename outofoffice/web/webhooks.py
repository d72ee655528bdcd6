"""/dashboard/webhooks: the owner's endpoints, their recent deliveries, the test button.

Every lookup goes through webhooks.get_endpoint with the signed-in owner's account, so
another firm's endpoint id is a 404. The secret is on the page only in the answer to
the form that added the endpoint.
"""

from __future__ import annotations

import bottle

from outofoffice import routing, webhooks
from outofoffice.errors import ValidationError
from outofoffice.web.context import fail, instance, require_owner, see_other
from outofoffice.web.dashboard import dashboard_page

BASE = "/dashboard/webhooks"


def _endpoint_or_404(owner, endpoint_id: int):
    endpoint = webhooks.get_endpoint(owner, endpoint_id)
    if endpoint is None:
        raise fail(404, "There is no such webhook endpoint.")
    return endpoint


def list_page(form=None, errors=None, status=200, added=None, secret=""):
    owner = require_owner()
    listed = [
        (endpoint, webhooks.deliveries(owner, endpoint)) for endpoint in webhooks.endpoints(owner)
    ]
    return dashboard_page(
        "dashboard/webhooks.html",
        status=status,
        listed=listed,
        events=webhooks.EVENTS,
        event_words=webhooks.EVENT_WORDS,
        form=form or {"events": list(webhooks.EVENTS)},
        errors=errors or {},
        added=added,
        secret=secret,
        tested=bottle.request.query.get("tested", ""),
        waiting=bottle.request.query.get("waiting", ""),
        local=lambda at: routing.local_time(owner, at).strftime("%d %b %H:%M:%S"),
        allow_private=instance().config.webhooks.allow_private,
        at_most=webhooks.MAX_ENDPOINTS,
    )


def add():
    owner = require_owner()
    forms = bottle.request.forms
    url = (forms.getunicode("url", "") or "").strip()
    events = [e for e in forms.getall("events") if isinstance(e, str)]
    try:
        endpoint, secret = webhooks.add_endpoint(instance(), owner, url, events)
    except ValidationError as exc:
        return list_page({"url": url, "events": events}, exc.errors, 400)
    # The secret is shown in this answer only, never again: no redirect to a page that
    # would have to keep it.
    return list_page(added=endpoint, secret=secret, status=201)


def confirm_delete(endpoint_id: int):
    owner = require_owner()
    endpoint = _endpoint_or_404(owner, endpoint_id)
    return dashboard_page(
        "dashboard/confirm.html",
        question=f"Delete the webhook endpoint {endpoint.url}?",
        consequence="It hears of nothing more, and deliveries still waiting are dropped.",
        action=f"{BASE}/{endpoint.id}/delete",
        button="Delete the endpoint",
        back=BASE,
    )


def delete(endpoint_id: int):
    owner = require_owner()
    webhooks.delete_endpoint(owner, _endpoint_or_404(owner, endpoint_id))
    see_other(BASE)


def test(endpoint_id: int):
    owner = require_owner()
    endpoint = _endpoint_or_404(owner, endpoint_id)
    if webhooks.queue_test(instance(), owner, endpoint) is None:
        see_other(f"{BASE}?waiting={endpoint.id}#endpoint-{endpoint.id}")
    see_other(f"{BASE}?tested={endpoint.id}#endpoint-{endpoint.id}")


def install(app: bottle.Bottle) -> None:
    app.get(BASE, callback=list_page)
    app.post(BASE, callback=add)
    app.get(BASE + "/<endpoint_id:int>/delete", callback=confirm_delete)
    app.post(BASE + "/<endpoint_id:int>/delete", callback=delete)
    app.post(BASE + "/<endpoint_id:int>/test", callback=test)

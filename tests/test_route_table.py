"""Tests that enumerate the app's route table, so a route added later is covered too:
every dashboard route refuses a visitor who is not signed in, every dashboard POST
refuses a missing or wrong CSRF token, and owner B gets 404 for every object URL of
owner A's, with A's data unchanged."""

import re

import pytest

from outofoffice import db, dispatch
from outofoffice.models import (
    Category,
    Dispatch,
    OutboxMessage,
    Route,
    Subject,
    Vendor,
    WebhookEndpoint,
)
from tests.conftest import Client, client, csrf_of, request_form, sign_in, webhook_endpoint

PARAM = re.compile(r"<([a-z_]+)(?::[a-z]+)?>")


def dashboard_routes(app, method):
    return [
        r.rule for r in app.app.routes if r.method == method and r.rule.startswith("/dashboard")
    ]


def fill(rule: str, ids: dict) -> str:
    def value(match):
        name = match.group(1)
        if name == "item_id":
            return str(ids[rule.split("/")[2]])
        return str(ids[name])

    return PARAM.sub(value, rule)


def object_ids(instance, firm, d) -> dict:
    """An id of each kind of object the dashboard's URLs name, all of the firm's."""
    with db.connection():
        route = Route.select().where(Route.account == firm["account"]).first()
        endpoint = webhook_endpoint(instance, firm["account"])
    return {
        "vendors": firm["vera"].id,
        "subjects": firm["elm"].id,
        "categories": firm["plumbing"].id,
        "route_id": route.id,
        "dispatch_id": d.id,
        "endpoint_id": endpoint.id,
    }


@pytest.fixture
def alpha_ids(instance, firm):
    with db.connection():
        d = dispatch.submit(instance, firm["account"], request_form(firm)).dispatch
    return object_ids(instance, firm, d)


def snapshot(account):
    with db.connection():
        return (
            [(v.name, v.email, v.active) for v in Vendor.select().where(Vendor.account == account)],
            [s.name for s in Subject.select().where(Subject.account == account)],
            [c.name for c in Category.select().where(Category.account == account)],
            Route.select().where(Route.account == account).count(),
            [(d.status, d.vendor_id) for d in Dispatch.select().where(Dispatch.account == account)],
            [
                (e.url, e.events, e.active)
                for e in WebhookEndpoint.select().where(WebhookEndpoint.account == account)
            ],
            OutboxMessage.select().where(OutboxMessage.account == account).count(),
        )


def test_every_dashboard_route_refuses_a_visitor_not_signed_in(app, alpha_ids):
    gets, posts = dashboard_routes(app, "GET"), dashboard_routes(app, "POST")
    assert len(gets) >= 10 and len(posts) >= 15
    for rule in gets:
        response = app.get(fill(rule, alpha_ids), expect_errors=True)
        assert response.status_int == 303 and response.headers["Location"] == "/login", rule
    for rule in posts:
        assert app.post(fill(rule, alpha_ids), expect_errors=True).status_int == 403, rule


def test_every_dashboard_post_refuses_a_missing_or_wrong_csrf_token(app, instance, firm, alpha_ids):
    sign_in(app, instance, firm["account"])
    before = snapshot(firm["account"])
    for rule in dashboard_routes(app, "POST"):
        path = fill(rule, alpha_ids)
        assert app.post(path, {"name": "X"}, expect_errors=True).status_int == 403, rule
        bad = {"name": "X", "csrf_token": "forged"}
        assert app.post(path, bad, expect_errors=True).status_int == 403, rule
    assert snapshot(firm["account"]) == before


def test_owner_b_gets_404_for_every_object_of_owner_a(instance, firm, owners, alpha_ids):
    _, beta = owners
    app = client(instance)
    token = csrf_of(sign_in(app, instance, beta))
    before = snapshot(firm["account"])
    object_rules = [
        (method, rule)
        for method in ("GET", "POST")
        for rule in dashboard_routes(app, method)
        if PARAM.search(rule)
    ]
    assert len(object_rules) >= 12
    for method, rule in object_rules:
        path = fill(rule, alpha_ids)
        if method == "GET":
            status = app.get(path, expect_errors=True).status_int
        else:
            form = {
                "csrf_token": token,
                "name": "Hijack",
                "email": "h@x.example",
                "vendor": alpha_ids["vendors"],
                "note": "x",
                "direction": "up",
            }
            status = app.post(path, form, expect_errors=True).status_int
        assert status == 404, (method, rule, status)
    assert snapshot(firm["account"]) == before


def test_sign_out_everywhere_ends_every_session(app, instance, firm):
    other = Client(app.app)
    sign_in(other, instance, firm["account"])
    page = sign_in(app, instance, firm["account"])
    app.post("/dashboard/settings/sessions", {"csrf_token": csrf_of(page)}, status=303)
    assert app.get("/dashboard").status_int == 303
    assert other.get("/dashboard").status_int == 303

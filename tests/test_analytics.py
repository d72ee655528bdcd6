"""Analytics appear only on / and /privacy, never with DNT or GPC: every route is walked."""

import re

import pytest

from outofoffice import accounts, db, dispatch, owner_setup
from tests.conftest import ALPHA, client, path_of, request_form, sign_in, webhook_endpoint

GA = "G-TEST12345"


@pytest.fixture
def ga_app(make_instance):
    instance = make_instance(analytics={"google_analytics_id": GA})
    return instance, client(instance)


def test_only_the_marketing_pages_carry_analytics(ga_app):
    instance, app = ga_app
    for path in ("/", "/privacy"):
        page = app.get(path)
        assert GA in page.text
        assert "googletagmanager.com" in page.headers["Content-Security-Policy"]
        for header in ({"DNT": "1"}, {"Sec-GPC": "1"}):
            quiet = app.get(path, headers=header)
            assert GA not in quiet.text
            assert "googletagmanager" not in quiet.headers["Content-Security-Policy"]
    assert "Google Analytics counts visits" in app.get("/privacy").text


def test_no_other_route_in_the_app_carries_analytics(ga_app):
    instance, app = ga_app
    with db.connection():
        account = accounts.create_account(**ALPHA)
    with db.connection():
        vendor = owner_setup.save(
            account, owner_setup.KINDS["vendors"], {"name": "Vera", "email": "vera@plumb.example"}
        )
        subject = owner_setup.save(account, owner_setup.KINDS["subjects"], {"name": "Elm"})
        category = owner_setup.items(account, owner_setup.KINDS["categories"])[0]
        owner_setup.create_route(account, "", str(category.id), "always", [str(vendor.id)])
        firm = {"elm": subject, "plumbing": category}
        sub = dispatch.submit(instance, account, request_form(firm))
        action = dispatch.action_token(instance, sub.dispatch, vendor, "accept")
        login = path_of(accounts.login_link(instance, account)).rsplit("/", 1)[1]
        endpoint = webhook_endpoint(instance, account)
    sign_in(app, instance, account)
    values = {
        "slug": "alpha",
        "token": None,
        "path": "style.css",
        "item_id": None,
        "dispatch_id": str(sub.dispatch.id),
        "route_id": str(owner_setup.routes(account)[0].id),
        "endpoint_id": str(endpoint.id),
        "digest": "0" * 16,  # no logo: its 404 page carries nothing either
    }
    tokens = {"/auth/": login, "/s/": sub.status_token, "/v/": action}
    ids = {"vendors": vendor.id, "subjects": subject.id, "categories": category.id}
    walked = 0
    for route in app.app.routes:
        if route.method != "GET":
            continue

        def fill(match, rule=route.rule):
            name = match.group(1).split(":")[0]
            if name == "token":
                return next(t for prefix, t in tokens.items() if rule.startswith(prefix))
            if name == "item_id":
                return str(ids[rule.split("/")[2]])
            return values[name]

        path = re.sub(r"<([^>]+)>", fill, route.rule)
        response = app.get(path, expect_errors=True)
        assert response.status_int < 500 or path == "/healthz", path  # no scheduler here
        if path not in ("/", "/privacy"):
            assert GA not in response.text, path
            assert "googletagmanager" not in response.headers.get("Content-Security-Policy", "")
        walked += 1
    assert walked >= 15


def test_a_firms_own_subdomain_never_carries_analytics(make_instance):
    instance = make_instance(
        server={"routing_pages": "subdomain", "domain": "help.example"},
        analytics={"google_analytics_id": GA},
    )
    app = client(instance)
    assert GA in app.get("/privacy", headers={"Host": "help.example"}).text
    assert GA not in app.get("/privacy", headers={"Host": "alpha.help.example"}).text

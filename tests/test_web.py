"""The web app through WebTest: pages, headers, sign-in, logout, CSRF, errors."""

import json
import re
from datetime import timedelta

import pytest

from outofoffice import clock, db
from outofoffice.models import Account, Session
from outofoffice.templating import TEMPLATES
from outofoffice.web import create_app
from tests.conftest import Client, client, csrf_of, path_of, sign_in

SIGNUP = {
    "email": "dee@delta.example",
    "name": "Dee",
    "business_name": "Delta Homes",
    "slug": "delta",
    "industry": "home_services",
    "timezone": "America/Chicago",
}


def test_the_landing_page_says_what_it_does(app):
    page = app.get("/")
    assert "After-hours requests" in page.text
    assert page.html.find("a", href="/signup") and page.html.find("a", href="/login")


def test_healthz_reports_database_scheduler_and_backlog(app):
    response = app.get("/healthz", expect_errors=True)
    report = json.loads(response.text)
    assert set(report) >= {"status", "database", "scheduler", "outbox_backlog"}
    assert report["database"] == "ok" and report["outbox_backlog"] == 0
    # no scheduler runs in this test process: a monitor must hear about it
    assert report["scheduler"] == "stopped" and response.status_int == 503


def test_unknown_pages_get_a_friendly_404(app):
    page = app.get("/no/such/page", status=404)
    assert "There is no page at this address" in page.text
    assert "Traceback" not in page.text


def test_a_crash_gets_a_friendly_500_without_a_traceback(instance):
    wsgi = create_app(instance.config, instance)

    @wsgi.get("/crash-for-test")
    def crash():
        raise RuntimeError("secret internals")

    page = Client(wsgi).get("/crash-for-test", status=500, expect_errors=True)
    assert "Something went wrong" in page.text
    assert "secret internals" not in page.text and "Traceback" not in page.text
    assert page.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/", 200),
        ("get", "/login", 200),
        ("get", "/dashboard", 303),
        ("get", "/nope", 404),
        ("get", "/static/style.css", 200),
        ("get", "/healthz", 503),
        ("post", "/logout", 403),
    ],
)
def test_every_response_carries_the_security_headers(app, method, path, status):
    response = getattr(app, method)(path, status=status)
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers


def test_https_adds_hsts_and_a_host_prefixed_secure_cookie(make_instance):
    instance = make_instance(server={"base_url": "https://oop.example.test"})
    app = client(instance)
    assert "max-age=" in app.get("/").headers["Strict-Transport-Security"]
    with db.connection():
        account = Account.create(
            email="e@x.example", name="E", business_name="E", slug="eeee", industry="other"
        )
    from outofoffice import accounts

    with db.connection():
        url = accounts.login_link(instance, account)
    cookie = app.post(path_of(url)).headers["Set-Cookie"]
    assert cookie.startswith("__Host-oop_session=")
    assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= {
        part.strip() for part in cookie.split(";")
    }


def test_the_session_cookie_is_httponly_and_lax(app, instance, owners):
    from outofoffice import accounts

    with db.connection():
        url = accounts.login_link(instance, owners[0])
    cookie = app.post(path_of(url)).headers["Set-Cookie"]
    parts = {p.strip() for p in cookie.split(";")}
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= parts and "Secure" not in parts
    assert "Max-Age=2592000" in parts


def test_templates_have_no_inline_script_or_style():
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        if path.parent.name == "email":  # mail clients drop stylesheets: style= is how
            continue  # an email's buttons look like buttons; no CSP applies there
        assert "style=" not in text and "<style" not in text, path


class TestLogin:
    def test_the_same_page_for_known_and_unknown_addresses(self, app, owners, mailbox):
        known = app.post("/login", {"email": "ann@alpha.example"})
        unknown = app.post("/login", {"email": "zed@nowhere.example"})
        assert known.status_int == unknown.status_int == 200
        assert known.text.replace("ann@alpha.example", "X") == unknown.text.replace(
            "zed@nowhere.example", "X"
        )
        messages = mailbox.deliver()
        assert [m["To"] for m in messages] == ["ann@alpha.example"]

    def test_an_invalid_address_is_explained(self, app):
        page = app.post("/login", {"email": "not an address"}, status=400)
        assert "Enter an email address" in page.text

    def test_the_emailed_link_signs_in_and_never_works_again(self, app, owners, mailbox):
        app.post("/login", {"email": "ann@alpha.example"})
        [link] = mailbox.links()
        assert link.startswith("http://oop.example.test/auth/")
        path = path_of(link)
        for _ in range(2):  # mail scanners open links: GET consumes nothing
            confirm = app.get(path)
            assert confirm.html.find("form", method="post")
            assert "Alpha Properties" in confirm.text
        dashboard = confirm.forms[0].submit().follow()
        assert dashboard.request.path == "/dashboard"
        assert "Alpha Properties" in dashboard.text
        assert app.get(path, status=410).html.find("h1").text == "Link expired"
        assert app.post(path, status=410)

    def test_a_sixteen_minute_old_link_does_not_work(self, app, owners, mailbox):
        app.post("/login", {"email": "ann@alpha.example"})
        [link] = mailbox.links()
        clock.advance(timedelta(minutes=16))
        assert "expired" in app.get(path_of(link), status=410).text
        app.post(path_of(link), status=410)
        assert app.get("/dashboard").status_int == 303

    def test_a_forged_host_is_refused_and_links_come_from_base_url(self, app, owners, mailbox):
        form = {"email": "ann@alpha.example"}
        page = app.post("/login", form, headers={"Host": "evil.example"}, status=400)
        assert "http://oop.example.test" in page.text
        assert mailbox.links() == []
        app.post("/login", form, headers={"X-Forwarded-Host": "evil.example"})
        [link] = mailbox.links()
        assert link.startswith("http://oop.example.test/auth/")


class TestSignup:
    def test_signup_end_to_end(self, app, mailbox):
        form = app.get("/signup").forms[0]
        for key, value in SIGNUP.items():
            form[key] = value
        page = form.submit()
        assert "Check your email" in page.text
        [message] = mailbox.deliver()
        assert message["To"] == "dee@delta.example"
        [link] = re.findall(r"http://\S+/auth/\S+", mailbox.text(message))
        confirm = app.get(path_of(link))
        assert "Delta Homes" in confirm.text
        dashboard = confirm.forms[0].submit().follow()
        assert "Delta Homes" in dashboard.text
        assert "http://oop.example.test/r/delta" in dashboard.text

    def test_errors_are_shown_beside_the_fields_and_input_is_kept(self, app, owners):
        page = app.post("/signup", {**SIGNUP, "slug": "alpha", "timezone": "Nowhere"}, status=400)
        assert "That address is taken" in page.html.find(id="e-slug").text
        assert "time zone" in page.html.find(id="e-timezone").text
        assert page.html.find(id="f-business_name")["value"] == "Delta Homes"
        with db.connection():
            assert not Account.select().where(Account.slug == "delta").exists()

    def test_closed_signup_refuses(self, make_instance):
        instance = make_instance(server={"signup": "closed"})
        app = client(instance)
        assert "not taking new accounts" in app.get("/signup").text
        assert "not taking new accounts" in app.post("/signup", SIGNUP, status=403).text
        assert not app.get("/").html.find("a", href="/signup")

    def test_invite_signup_needs_a_valid_invitation(self, make_instance):
        from outofoffice import accounts

        instance = make_instance(server={"signup": "invite"})
        app = client(instance)
        assert "by invitation" in app.get("/signup").text
        app.post("/signup", SIGNUP, status=403)
        with db.connection():
            url = accounts.create_invite(instance)
        form = app.get(path_of(url)).forms[0]
        for key, value in SIGNUP.items():
            form[key] = value
        assert "Check your email" in form.submit().text


class TestLogoutAndCsrf:
    def test_logout_without_the_csrf_token_is_refused_and_the_session_lives(
        self, app, instance, owners
    ):
        sign_in(app, instance, owners[0])
        app.post("/logout", status=403)
        app.post("/logout", {"csrf_token": "forged"}, status=403)
        assert "Alpha Properties" in app.get("/dashboard").text

    def test_logout_with_the_token_ends_the_session(self, app, instance, owners):
        dashboard = sign_in(app, instance, owners[0])
        app.post("/logout", {"csrf_token": csrf_of(dashboard)}, status=303)
        assert app.get("/dashboard").headers["Location"] == "/login"
        with db.connection():
            assert Session.select().count() == 0

    def test_one_owners_csrf_token_does_not_work_for_another(self, instance, owners):
        first, second = (client(instance) for _ in "12")
        token_a = csrf_of(sign_in(first, instance, owners[0]))
        sign_in(second, instance, owners[1])
        second.post("/logout", {"csrf_token": token_a}, status=403)

    def test_the_dashboard_shows_the_business_and_a_logout_form(self, app, instance, owners):
        page = sign_in(app, instance, owners[1])
        assert "Beta Legal" in page.text and "ann@alpha.example" not in page.text
        assert page.html.find("form", action="/logout").find("input", {"name": "csrf_token"})

    def test_anonymous_visitors_are_sent_to_log_in(self, app):
        assert app.get("/dashboard", status=303).headers["Location"] == "/login"


def test_a_too_large_body_gets_413(app):
    page = app.post("/login", {"email": "a@b.example", "pad": "x" * 70_000}, status=413)
    assert "64 KiB" in page.text


class TestHostHeader:
    @pytest.mark.parametrize(
        "host",
        ["evil.example", "oop.example.test.evil.example", "alpha.oop.example.test", "[::1", ""],
    )
    def test_path_mode_answers_only_base_urls_host(self, app, host):
        page = app.get("/login", headers={"Host": host}, status=400)
        assert "http://oop.example.test" in page.text
        assert app.get("/login", headers={"Host": "OOP.example.test:8443"}).status_int == 200

    def test_healthz_answers_probes_by_address(self, app):
        report = app.get("/healthz", headers={"Host": "10.0.0.5:8080"}, status=503).json
        assert report["database"] == "ok"  # 503 only because no scheduler runs in this test

    def test_a_loopback_base_url_accepts_every_loopback_name(self, make_instance):
        app = client(make_instance(server={"base_url": "http://127.0.0.1:8080"}))
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
            assert app.get("/", headers={"Host": host}).status_int == 200
        app.get("/", headers={"Host": "rebind.evil.example:8080"}, status=400)

    def test_subdomain_mode_answers_the_domain_and_its_subdomains(self, make_instance):
        instance = make_instance(
            server={
                "base_url": "https://app.help.example",
                "routing_pages": "subdomain",
                "domain": "help.example",
            }
        )
        app = client(instance)
        for host in ("app.help.example", "help.example", "alpha.help.example"):
            assert app.get("/privacy", headers={"Host": host}).status_int == 200
        for host in ("evilhelp.example", "help.example.evil", "oop.example.test"):
            app.get("/privacy", headers={"Host": host}, status=400)


class TestCrossSitePosts:
    def test_a_sign_in_link_posted_from_another_site_is_refused(self, app, instance, owners):
        from outofoffice import accounts

        with db.connection():
            path = path_of(accounts.login_link(instance, owners[0]))
        app.post(path, headers={"Origin": "https://evil.example"}, status=403)
        app.post(path, headers={"Sec-Fetch-Site": "cross-site"}, status=403)
        app.post(path, headers={"Origin": "null"}, status=403)
        app.post(path, headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"}, status=403)
        # the link was not used up by the refused attempts
        ok = app.post(path, headers={"Origin": "http://oop.example.test"}, status=303)
        assert ok.headers["Location"] == "/dashboard"

    def test_login_and_signup_forms_refuse_other_sites(self, app, owners, mailbox):
        evil = {"Origin": "http://oop.example.test.evil.example"}
        app.post("/login", {"email": "ann@alpha.example"}, headers=evil, status=403)
        app.post("/signup", SIGNUP, headers={"Sec-Fetch-Site": "cross-site"}, status=403)
        assert mailbox.deliver() == []

    def test_same_site_fetches_are_fine(self, app):
        headers = {"Origin": "http://oop.example.test", "Sec-Fetch-Site": "same-origin"}
        assert app.post("/login", {"email": "x@y.example"}, headers=headers).status_int == 200
        hidden = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        assert app.post("/login", {"email": "x@y.example"}, headers=hidden).status_int == 200


def test_plain_text_email_is_not_html_escaped(app, conn, mailbox):
    app.post("/signup", {**SIGNUP, "business_name": 'Smith & "Sons" <HVAC>'})
    [message] = mailbox.deliver()
    assert 'Smith & "Sons" <HVAC>' in mailbox.text(message)
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Smith &amp; &#34;Sons&#34; &lt;HVAC&gt;" in html


@pytest.mark.parametrize(
    "address",
    [
        "=?utf-8?q?attacker=40evil.test?=,victim@example.com",
        "<x>y@example.com",
        "a@example.com, b@example.com",
        "Ann <ann@example.com>",
    ],
)
def test_only_a_single_bare_address_is_accepted(app, mailbox, address):
    page = app.post("/signup", {**SIGNUP, "email": address}, status=400)
    assert "Enter an email address" in page.html.find(id="e-email").text
    app.post("/login", {"email": address}, status=400)
    assert mailbox.deliver() == []


def test_statuses_bottle_makes_itself_get_the_friendly_page(app):
    response = app.get("/static/style.css", headers={"Range": "bytes=999999-"}, status=416)
    assert "oop.example.test" not in response.text and "<h1>" in response.text
    assert response.headers["Content-Security-Policy"]
    assert "public" not in response.headers["Cache-Control"]
    missing = app.get("/static/nope.css", status=404)
    assert missing.headers["Cache-Control"] == "no-store"


def test_tokens_are_cut_out_of_logged_paths():
    from outofoffice.web.application import loggable

    assert loggable("/auth/SECRETTOKEN") == "/auth/…"
    assert loggable("/v/SECRET/extra") == "/v/…/extra"
    assert loggable("/dashboard") == "/dashboard"


def test_requests_are_counted_per_day_route_and_status_and_nothing_more(instance, app, firm):
    from outofoffice.models import RequestCount

    app.get("/r/alpha")
    app.get("/r/alpha")
    app.get("/no/such/page", status=404)
    with db.connection():
        instance.traffic.flush()
        counts = {(r.route, r.status): r.count for r in RequestCount.select()}
    assert counts == {("/r/<slug>", 200): 2, ("(no route)", 404): 1}
    assert not any("alpha" in route for route, _ in counts)


def test_the_favicon_is_served_where_browsers_and_the_page_ask(app):
    icon = app.get("/static/favicon.svg")
    assert icon.content_type == "image/svg+xml"
    assert icon.text.startswith("<svg") and "#1f5fbf" in icon.text
    legacy = app.get("/favicon.ico")  # browsers ask for it whatever the page says
    assert legacy.content_type == "image/svg+xml" and legacy.body == icon.body
    assert "max-age" in legacy.headers["Cache-Control"]


def test_head_answers_like_get_without_a_body(app, instance, firm, mailbox):
    from tests.conftest import request_form

    status_path = app.post("/r/alpha", request_form(firm)).headers["Location"]
    paths = {
        "/": 200,
        "/r/alpha": 200,
        status_path: 200,
        "/dashboard": 303,
        "/static/favicon.svg": 200,
        "/favicon.ico": 200,
        "/healthz": 503,  # no scheduler runs in this test process
        "/no/such/page": 404,
    }
    for path, status in paths.items():
        got = app.get(path, status=status)
        head = app.head(path, status=status)
        assert head.body == b"", path
        assert head.headers["Content-Length"] == str(len(got.body)), path
        for name in ("Content-Type", "Content-Security-Policy", "Cache-Control", "Location"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
    sign_in(app, instance, firm["account"])
    assert app.head("/dashboard", status=200).body == b""
    assert app.head("/logout", status=405).body == b""  # POST only, as GET finds


def test_head_sends_nothing_and_acts_on_nothing(app, firm, mailbox):
    app.head("/r/alpha", status=200)
    with db.connection():
        from outofoffice.models import Dispatch

        assert Dispatch.select().count() == 0
    assert mailbox.deliver() == []

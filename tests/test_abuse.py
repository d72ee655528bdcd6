"""Abuse controls: rate limits, the honeypot, the blocklist; forged headers change nothing."""

from datetime import timedelta

import pytest
from click.testing import CliRunner

from outofoffice import clock, db
from outofoffice.cli import cli
from outofoffice.models import Dispatch, IPRecord, OutboxMessage
from tests.conftest import client, request_form


def from_ip(instance, ip):
    return client(instance, extra_environ={"REMOTE_ADDR": ip})


def test_the_fourth_request_in_an_hour_from_one_address_pages_no_one(make_instance, request):
    instance = make_instance(abuse={"dispatches_per_ip_per_hour": 3})
    firm = request.getfixturevalue("firm")
    app = from_ip(instance, "198.51.100.7")
    for n in range(3):
        form = request_form(firm, phone=f"+1 555 010{n}")
        app.post("/r/alpha", form, headers={"X-Forwarded-For": f"10.0.0.{n}"}, status=303)
    refused = app.post(
        "/r/alpha",
        request_form(firm, phone="+1 555 0199"),
        headers={"X-Forwarded-For": "10.9.9.9"},
        status=429,
    )
    assert "phone the firm" in refused.text
    with db.connection():
        assert Dispatch.select().count() == 3
        assert {r.ip for r in IPRecord.select()} == {"198.51.100.7"}
    # another address is not affected
    from_ip(instance, "198.51.100.8").post(
        "/r/alpha", request_form(firm, phone="+1 555 0177"), status=303
    )


def test_one_firm_flooded_from_many_addresses_stops_paging(make_instance, request):
    instance = make_instance(abuse={"dispatches_per_account_per_hour": 2})
    firm = request.getfixturevalue("firm")
    for n in range(2):
        from_ip(instance, f"203.0.113.{n}").post(
            "/r/alpha", request_form(firm, phone=f"+1 555 020{n}"), status=303
        )
    from_ip(instance, "203.0.113.50").post(
        "/r/alpha", request_form(firm, phone="+1 555 0250"), status=429
    )


def test_eight_sign_in_requests_for_one_address_send_at_most_five(instance, owners, mailbox):
    for n in range(8):
        from_ip(instance, f"192.0.2.{n}").post("/login", {"email": "ann@alpha.example"})
    sent = [m for m in mailbox.deliver() if m["To"] == "ann@alpha.example"]
    assert len(sent) == 5


def test_one_address_asking_for_many_sign_in_emails_is_cut_off(make_instance, request, mailbox):
    instance = make_instance(abuse={"login_emails_per_ip_per_hour": 2})
    request.getfixturevalue("owners")
    app = from_ip(instance, "192.0.2.200")
    for email in ("ann@alpha.example", "bob@beta.example", "ann@alpha.example"):
        assert app.post("/login", {"email": email}).status_int == 200
    with db.connection():
        assert OutboxMessage.select().count() == 2


def test_the_honeypot_must_stay_empty(app, firm):
    page = app.post("/r/alpha", request_form(firm) | {"website": "http://spam.example"}, status=400)
    assert "phone the firm" in page.text
    with db.connection():
        assert Dispatch.select().count() == 0


def token_of(page) -> str:
    return page.html.find("input", {"name": "form_token"})["value"]


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "99999999999999.x", "1.AAAA", "\u00b2.x", "\u0661\u0662.x"],
    ids=["missing", "garbage", "far-future", "forged", "superscript", "arabic-indic"],
)
def test_a_routing_form_without_a_valid_token_sends_nothing(app, firm, token):
    form = request_form(firm, description="Water in the hall") | {"form_token": token}
    page = app.post("/r/alpha", form, status=400)
    assert "send it again" in page.text
    assert "Water in the hall" in page.text  # what the caller typed is kept
    with db.connection():
        assert Dispatch.select().count() == 0 and OutboxMessage.select().count() == 0
    # the page carries a fresh token: sending it again works
    form["form_token"] = token_of(page)
    assert app.post("/r/alpha", form).status_int == 303


def test_a_form_token_lasts_hours_and_belongs_to_one_firm(app, firm):
    token = token_of(app.get("/r/alpha"))
    clock.advance(timedelta(hours=11))
    assert app.post("/r/alpha", request_form(firm) | {"form_token": token}).status_int == 303
    clock.advance(timedelta(hours=2))
    stale = request_form(firm, phone="+1 555 0123") | {"form_token": token}
    app.post("/r/alpha", stale, status=400)
    beta_token = token_of(app.get("/r/beta"))
    app.post("/r/alpha", stale | {"form_token": beta_token}, status=400)
    with db.connection():
        assert Dispatch.select().count() == 1


def test_the_blocklist_from_the_cli(instance, firm):
    config_file = str(instance.config.source)
    runner = CliRunner()
    assert (
        runner.invoke(
            cli,
            [
                "--config",
                config_file,
                "abuse",
                "block",
                "198.51.100.66",
                "--days",
                "2",
                "--reason",
                "flooding",
            ],
        ).exit_code
        == 0
    )
    assert "198.51.100.66" in runner.invoke(cli, ["--config", config_file, "abuse", "list"]).output
    from_ip(instance, "198.51.100.66").post("/r/alpha", request_form(firm), status=429)
    assert (
        runner.invoke(cli, ["--config", config_file, "abuse", "unblock", "198.51.100.66"]).exit_code
        == 0
    )
    from_ip(instance, "198.51.100.66").post("/r/alpha", request_form(firm), status=303)
    bad = runner.invoke(cli, ["--config", config_file, "abuse", "block", "not-an-ip"])
    assert bad.exit_code != 0 and "not an IP address" in bad.output


def test_a_non_ascii_digit_in_the_form_token_is_a_400_not_a_crash(app, firm):
    """Bottle reads form bytes as latin-1: %B2 arrives as "²", which str.isdigit takes."""
    body = "form_token=%B2.x&name=A&phone=%2B1+555+0100&description=Leak"
    page = app.post("/r/alpha", body, content_type="application/x-www-form-urlencoded", status=400)
    assert "send it again" in page.text

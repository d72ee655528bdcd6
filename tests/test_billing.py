"""Billing with Stripe: trials the product owns, Checkout and the Customer Portal through
Stripe's API (a local stand-in that speaks its contract, tests/stripe_standin.py),
webhooks signed here as Stripe signs them, the states and their emails, each once, and
no caller ever turned away. With billing off, nothing of it exists."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from outofoffice import accounts, billing, clock, config, db, retention
from outofoffice.billing import lifecycle
from outofoffice.billing.base import SignatureError
from outofoffice.billing.state import state_of
from outofoffice.models import (
    Account,
    AccountBilling,
    BillingEvent,
    BillingNotice,
    Dispatch,
    OutboxMessage,
    Vendor,
)
from outofoffice.web import create_app
from tests import stripe_standin as st
from tests.conftest import (
    Mailbox,
    base_sections,
    client,
    csrf_of,
    dump_database,
    path_of,
    request_form,
    sign_in,
    write_config,
)
from tests.test_route_table import fill, object_ids
from tests.twilio_standin import TwilioStandIn
from tests.twilio_standin import config_sections as twilio_sections

WEBHOOK = "/billing/stripe/webhook"


@pytest.fixture
def stripe():
    standin = st.StripeStandIn(now=clock.timestamp).start()
    yield standin
    standin.stop()


@pytest.fixture
def instance(request, make_instance, stripe):
    """An installation that bills through the stand-in: 14 days of trial, 14 of grace;
    tests marked billing_off get one with [billing] left out."""
    if request.node.get_closest_marker("billing_off"):
        return make_instance()
    return make_instance(**st.config_sections(stripe))


@pytest.fixture
def owner_app(instance, firm):
    """Alpha's owner, signed in to the dashboard."""
    app = client(instance)
    sign_in(app, instance, firm["account"])
    return app


def post_event(app, event: dict, secret: str = st.WEBHOOK_SECRET, at: int | None = None, **kw):
    body = json.dumps(event).encode()
    stamp = int(clock.timestamp()) if at is None else at
    headers = {"Stripe-Signature": st.sign(secret, body, stamp), "Content-Type": "application/json"}
    return app.post(WEBHOOK, body, headers=headers, **kw)


def state(instance, account) -> str:
    with db.connection():
        return state_of(Account.get_by_id(account.id), instance.config, clock.now()).name


def subjects(mailbox: Mailbox, to: str = "ann@alpha.example") -> list[str]:
    """The subjects of the emails Alpha's owner got since the last look."""
    return [m["Subject"] for m in mailbox.deliver() if m["To"] == to]


def checkout(owner_app, stripe) -> str:
    """The owner presses Subscribe; returns the Checkout Session's id."""
    page = owner_app.get("/dashboard/billing")
    answer = owner_app.post("/dashboard/billing/checkout", {"csrf_token": csrf_of(page)})
    assert answer.status_int == 303
    assert answer.location.startswith("https://checkout.stripe.com/c/pay/cs_test_")
    return answer.location.rsplit("/", 1)[1]


def notices(account) -> list[str]:
    with db.connection():
        return sorted(
            n.kind for n in BillingNotice.select().where(BillingNotice.account == account)
        )


def run_notices(instance) -> int:
    with db.connection():
        return lifecycle.send_notices(instance)


# --- Checkout, the portal, and what the return page does not do ------------------------


def test_subscribe_opens_a_checkout_for_the_price_with_the_rest_of_the_trial(
    instance, firm, owner_app, stripe
):
    clock.advance(timedelta(days=3))  # 11 of 14 days left
    assert 'href="/dashboard/billing"' in owner_app.get("/dashboard").text
    session = checkout(owner_app, stripe)
    (call,) = stripe.calls("POST", "/v1/checkout/sessions")
    form = call["form"]
    account = firm["account"]
    assert form["mode"] == "subscription"
    assert form["line_items[0][price]"] == st.PRICE_ID
    with db.connection():
        reference = lifecycle.reference(instance.keys, Account.get_by_id(account.id))
    assert form["client_reference_id"] == reference
    assert form["subscription_data[metadata][account_ref]"] == reference
    assert form["customer_email"] == account.email
    assert form["success_url"] == "http://oop.example.test/dashboard/billing?checkout=done"
    assert form["cancel_url"] == "http://oop.example.test/dashboard/billing"
    with db.connection():
        trial_ends = state_of(account, instance.config, clock.now()).until
    assert int(form["subscription_data[trial_end]"]) == int(
        trial_ends.replace(tzinfo=__import__("datetime").UTC).timestamp()
    )
    assert call["version"] == "2024-06-20"
    assert call["key"].startswith(f"checkout-{account.id}-")
    assert call["content_type"] == "application/x-www-form-urlencoded"
    # the owner comes back from Stripe before any webhook: nothing is granted
    back = owner_app.get("/dashboard/billing?checkout=done")
    assert "Stripe is confirming" in back.text
    assert state(instance, account) == "trial"
    assert session in stripe.sessions


def test_a_trial_with_under_two_days_left_is_passed_on_in_whole_days(
    instance, firm, owner_app, stripe
):
    clock.advance(timedelta(days=12, hours=12))  # a day and a half left
    checkout(owner_app, stripe)
    (call,) = stripe.calls("POST", "/v1/checkout/sessions")
    assert call["form"]["subscription_data[trial_period_days]"] == "2"
    assert "subscription_data[trial_end]" not in call["form"]


def test_a_lost_answer_is_asked_again_with_the_same_idempotency_key(
    instance, firm, owner_app, stripe
):
    stripe.fail_next(500, after_processing=True)
    session = checkout(owner_app, stripe)
    first, second = stripe.calls("POST", "/v1/checkout/sessions")
    assert first["key"] == second["key"]
    assert list(stripe.sessions) == [session]  # one checkout, not two


def test_a_double_press_makes_one_checkout(instance, firm, owner_app, stripe):
    now = clock.now()  # at the start of an hour: both presses fall in it
    clock.advance(now.replace(minute=0, second=5, microsecond=0) + timedelta(hours=1) - now)
    assert checkout(owner_app, stripe) == checkout(owner_app, stripe)
    assert len(stripe.sessions) == 1


def test_stripe_refusing_or_down_gets_an_honest_page_and_changes_nothing(
    instance, firm, owner_app, stripe
):
    page = owner_app.get("/dashboard/billing")
    stripe.fail_next(500, times=2)
    answer = owner_app.post(
        "/dashboard/billing/checkout", {"csrf_token": csrf_of(page)}, status=502
    )
    assert "Stripe could not be reached" in answer.text
    assert "carry on as before" in answer.text
    stripe.fail_next(400)
    owner_app.post("/dashboard/billing/checkout", {"csrf_token": csrf_of(page)}, status=502)
    with db.connection():
        assert AccountBilling.select().count() == 0
    assert state(instance, firm["account"]) == "trial"


def test_checkout_and_portal_need_the_forms_token(instance, firm, owner_app, stripe):
    owner_app.post("/dashboard/billing/checkout", {}, status=403)
    owner_app.post("/dashboard/billing/portal", {}, status=403)
    assert stripe.requests == []


def test_the_portal_opens_for_a_customer_and_not_before(instance, firm, owner_app, stripe):
    page = owner_app.get("/dashboard/billing")
    assert "Manage card" not in page.text
    owner_app.post("/dashboard/billing/portal", {"csrf_token": csrf_of(page)}, status=400)
    post_event(owner_app, stripe.complete_checkout(checkout(owner_app, stripe)))
    page = owner_app.get("/dashboard/billing")
    answer = owner_app.post("/dashboard/billing/portal", {"csrf_token": csrf_of(page)})
    assert answer.status_int == 303
    assert answer.location.startswith("https://billing.stripe.com/p/session/")
    (call,) = stripe.calls("POST", "/v1/billing_portal/sessions")
    assert call["form"]["return_url"] == "http://oop.example.test/dashboard/billing"
    assert call["key"]


# --- the lifecycle, each email once ----------------------------------------------------


def test_a_whole_lifecycle_moves_the_state_and_sends_each_email_once(
    instance, firm, owner_app, stripe, mailbox
):
    """trial -> checkout completed -> invoice paid -> payment failed (past_due) ->
    canceled -> grace -> limited, every event delivered twice, as Stripe may."""
    account = firm["account"]
    mailbox.deliver()  # what setting up the firm sent

    def deliver_twice(event):
        assert post_event(owner_app, event).text.strip() == "handled"
        assert post_event(owner_app, event).text.strip() == "duplicate"

    assert state(instance, account) == "trial"
    assert "free trial ends in 14 days" in owner_app.get("/dashboard").text

    clock.advance(timedelta(days=5))
    completed = stripe.complete_checkout(checkout(owner_app, stripe))
    deliver_twice(completed)
    sub = completed["data"]["object"]["subscription"]
    assert stripe.subscriptions[sub]["status"] == "trialing"  # the rest of our trial
    assert state(instance, account) == "active"
    assert "free trial" not in owner_app.get("/dashboard").text

    clock.advance(timedelta(days=10))  # the trial is over: the first invoice is paid
    stripe.set_status(sub, "active", period_days=30)
    deliver_twice(stripe.invoice_event("invoice.paid", sub))
    assert state(instance, account) == "active"

    clock.advance(timedelta(days=30))  # the second one fails
    sign_in(owner_app, instance, account)  # a month on: a new sign-in
    stripe.set_status(sub, "past_due")
    deliver_twice(stripe.invoice_event("invoice.payment_failed", sub))
    deliver_twice(stripe.subscription_event("customer.subscription.updated", sub))
    assert state(instance, account) == "past_due"
    assert "A payment failed" in owner_app.get("/dashboard").text

    stripe.set_status(sub, "canceled")
    deliver_twice(stripe.subscription_event("customer.subscription.deleted", sub))
    assert state(instance, account) == "grace"
    assert "Canceled (grace period)" in owner_app.get("/dashboard/billing").text

    run_notices(instance)
    clock.advance(timedelta(days=13, hours=1))
    run_notices(instance)
    run_notices(instance)
    assert state(instance, account) == "grace"
    clock.advance(timedelta(days=1))
    assert state(instance, account) == "limited"
    run_notices(instance)
    run_notices(instance)

    got = subjects(mailbox)
    assert sorted(got) == sorted(
        [
            "A payment failed",
            "Your subscription is canceled",
            "Your grace period ends tomorrow",
            "Your dashboard is read-only now",
        ]
    )
    for message in mailbox_texts(instance):
        assert "nothing changes for them" in message
        assert "http://oop.example.test/dashboard/billing" in message
    assert notices(account) == sorted(
        ["payment_failed", "subscription_canceled", "grace_1d", "limited"]
    )


def mailbox_texts(instance) -> list[str]:
    folder = instance.config.mail_dir
    out = []
    for path in sorted(folder.glob("*.eml")):
        text = path.read_text(errors="replace")
        if "dashboard/billing" in text:
            out.append(re.sub(r"=\r?\n", "", text))
    return out


def test_the_trial_reminders_come_once_each_as_the_clock_moves(instance, firm, mailbox):
    account = firm["account"]
    mailbox.deliver()
    run_notices(instance)
    assert subjects(mailbox) == []
    clock.advance(timedelta(days=7, hours=1))  # 6 days 23 hours left
    run_notices(instance)
    run_notices(instance)
    assert subjects(mailbox) == ["Your trial ends in 7 days"]
    clock.advance(timedelta(days=6, hours=1))  # 22 hours left
    run_notices(instance)
    assert subjects(mailbox) == ["Your trial ends tomorrow"]
    clock.advance(timedelta(hours=23))
    assert state(instance, account) == "grace"
    run_notices(instance)
    run_notices(instance)
    assert subjects(mailbox) == ["Your trial has ended"]
    clock.advance(timedelta(days=13, hours=1))
    run_notices(instance)
    assert subjects(mailbox) == ["Your grace period ends tomorrow"]
    clock.advance(timedelta(days=1))
    run_notices(instance)
    assert state(instance, account) == "limited"
    assert subjects(mailbox) == ["Your dashboard is read-only now"]
    run_notices(instance)
    assert subjects(mailbox) == []


def test_a_payment_that_recovers_says_so_once(instance, firm, owner_app, stripe, mailbox):
    mailbox.deliver()
    sub = post_subscription(owner_app, stripe, "active")
    stripe.set_status(sub, "past_due")
    post_event(owner_app, stripe.invoice_event("invoice.payment_failed", sub))
    stripe.set_status(sub, "active", period_days=30)
    post_event(owner_app, stripe.invoice_event("invoice.paid", sub))
    post_event(owner_app, stripe.subscription_event("customer.subscription.updated", sub))
    assert state(instance, firm["account"]) == "active"
    assert sorted(subjects(mailbox)) == ["A payment failed", "Your payment went through"]


def post_subscription(owner_app, stripe, status: str) -> str:
    event = stripe.complete_checkout(checkout(owner_app, stripe), status=status)
    assert post_event(owner_app, event).status_int == 200
    return event["data"]["object"]["subscription"]


def test_events_out_of_order_never_move_the_state_backwards(
    instance, firm, owner_app, stripe, mailbox
):
    """Stripe's canceled, then an older "updated" event (its payload says active) comes
    late: the subscription is re-read, so the state stays what Stripe says now."""
    sub = post_subscription(owner_app, stripe, "active")
    clock.advance(timedelta(days=20))  # past the trial
    stale = stripe.subscription_event("customer.subscription.updated", sub)  # says active
    stripe.set_status(sub, "canceled")
    post_event(owner_app, stripe.subscription_event("customer.subscription.deleted", sub))
    assert state(instance, firm["account"]) == "grace"
    post_event(owner_app, stale)
    assert state(instance, firm["account"]) == "grace"
    with db.connection():
        assert AccountBilling.get().status == "canceled"


def test_an_old_subscriptions_end_does_not_replace_the_one_that_runs(
    instance, firm, owner_app, stripe
):
    old = post_subscription(owner_app, stripe, "active")
    clock.advance(timedelta(days=20))  # past the trial
    sign_in(owner_app, instance, firm["account"])
    stripe.set_status(old, "canceled")
    post_event(owner_app, stripe.subscription_event("customer.subscription.deleted", old))
    clock.advance(timedelta(hours=2))
    new = post_subscription(owner_app, stripe, "active")
    assert state(instance, firm["account"]) == "active"
    post_event(owner_app, stripe.subscription_event("customer.subscription.deleted", old))
    assert state(instance, firm["account"]) == "active"
    with db.connection():
        assert AccountBilling.get().subscription_id == new


def test_a_failure_to_read_the_subscription_answers_500_and_writes_nothing(
    instance, firm, owner_app, stripe
):
    event = stripe.complete_checkout(checkout(owner_app, stripe), status="active")
    stripe.fail_next(503)
    post_event(owner_app, event, status=500)
    with db.connection():
        assert BillingEvent.select().count() == 0
        assert AccountBilling.select().count() == 0
    assert state(instance, firm["account"]) == "trial"
    assert post_event(owner_app, event).text.strip() == "handled"  # Stripe's retry
    assert state(instance, firm["account"]) == "active"


def test_an_event_for_no_account_of_ours_is_recorded_and_answered(
    instance, firm, owner_app, stripe
):
    event = stripe.event("customer.created", {"id": "cus_stranger", "object": "customer"})
    assert post_event(owner_app, event).text.strip() == "ignored"
    assert post_event(owner_app, event).text.strip() == "duplicate"


def test_the_daily_job_catches_a_webhook_that_never_came(
    instance, firm, owner_app, stripe, mailbox
):
    mailbox.deliver()
    sub = post_subscription(owner_app, stripe, "active")
    stripe.set_status(sub, "past_due")  # and the webhook is lost
    with db.connection():
        assert lifecycle.reconcile(instance) == 1
        assert lifecycle.reconcile(instance) == 0  # once a day
    assert state(instance, firm["account"]) == "past_due"
    assert subjects(mailbox) == ["A payment failed"]
    stripe.set_status(sub, "active")
    clock.advance(timedelta(days=1))
    with db.connection():
        assert lifecycle.reconcile(instance) == 1
    assert state(instance, firm["account"]) == "active"


# --- signatures -------------------------------------------------------------------------


def test_unsigned_badly_signed_or_stale_events_are_refused_with_no_change(
    instance, firm, owner_app, stripe
):
    event = stripe.complete_checkout(checkout(owner_app, stripe), status="active")
    body = json.dumps(event).encode()
    now = int(clock.timestamp())
    good = st.sign(st.WEBHOOK_SECRET, body, now)
    refused = [
        {},
        {"Stripe-Signature": st.sign("whsec_" + "f" * 32, body, now)},
        # well outside the tolerance, however long this test takes on a slow machine
        {"Stripe-Signature": st.sign(st.WEBHOOK_SECRET, body, now - 400)},
        {"Stripe-Signature": st.sign(st.WEBHOOK_SECRET, body, now + 400)},
        {"Stripe-Signature": good.replace("t=", "t=1")},
        {"Stripe-Signature": good.split(",")[1]},  # no t=
        {"Stripe-Signature": good.replace("v1=", "v0=")},
    ]
    for headers in refused:
        answer = owner_app.post(WEBHOOK, body, headers=headers, status=400)
        assert "refused" in answer.text
    for mangled in (good.replace("v1=", "v1=\u00e9"), good.replace("t=", "t=\u00b2")):
        owner_app.post(WEBHOOK, body, headers={"Stripe-Signature": mangled}, status=400)
    tampered = body.replace(b'"complete"', b'"completed"')
    assert tampered != body
    owner_app.post(WEBHOOK, tampered, headers={"Stripe-Signature": good}, status=400)
    with db.connection():
        assert BillingEvent.select().count() == 0
    assert stripe.calls("GET", "/v1/subscriptions") == []
    # within the tolerance, and with one good v1 among others, it is Stripe's
    mixed = (
        f"t={(at := int(clock.timestamp()) - 250)},v1={'0' * 64},"
        + st.sign(st.WEBHOOK_SECRET, body, at).split(",")[1]
    )
    assert owner_app.post(WEBHOOK, body, headers={"Stripe-Signature": mixed}).status_int == 200
    assert state(instance, firm["account"]) == "active"


def test_both_secrets_verify_while_one_is_rotated(make_instance, stripe, tmp_path):
    secrets_file = tmp_path / "whsec"
    secrets_file.write_text(f"{st.OLD_WEBHOOK_SECRET}\n{st.WEBHOOK_SECRET}\n")
    secrets_file.chmod(0o600)
    inst = make_instance(**st.config_sections(stripe, secret_file=str(secrets_file)))
    app = client(inst)
    for secret in (st.OLD_WEBHOOK_SECRET, st.WEBHOOK_SECRET):
        event = stripe.event("customer.created", {"id": "cus_x", "object": "customer"})
        assert post_event(app, event, secret=secret).status_int == 200
    post_event(app, stripe.event("ping", {}), secret="whsec_" + "9" * 32, status=400)


# --- limited mode, and callers in every state -------------------------------------------


def put_in(instance, account, name: str) -> None:
    """Store what makes the account's state ``name``."""
    now = clock.now()
    row = dict(
        account=account,
        trial_started_at=now - timedelta(days=40),
        trial_ends_at=now - timedelta(days=26),
        customer_id="cus_state",
        subscription_id="sub_state",
        status={"trial": "", "active": "active", "past_due": "past_due"}.get(name, "canceled"),
        ended_at=now - timedelta(days=1 if name == "grace" else 20),
        checked_at=now,
    )
    if name == "trial":
        row |= dict(trial_started_at=now, trial_ends_at=now + timedelta(days=14))
    with db.connection(), db.write():
        AccountBilling.delete().where(AccountBilling.account == account).execute()
        AccountBilling.create(**row)
    assert state(instance, account) == name


@pytest.fixture
def texting_instance(make_instance, stripe):
    """Billing on, and SMS through Twilio's stand-in: limited mode pauses the texts."""
    with TwilioStandIn() as twilio:
        yield make_instance(**st.config_sections(stripe), **twilio_sections(twilio))


@pytest.mark.parametrize("name", ["trial", "active", "past_due", "grace", "limited"])
def test_a_callers_request_goes_through_in_every_state(texting_instance, firm, name):
    instance = texting_instance
    account = firm["account"]
    with db.connection():
        Vendor.update(channels=["email", "sms"]).where(Vendor.id == firm["vera"].id).execute()
        Account.update(caller_sms=True).where(Account.id == account.id).execute()
    put_in(instance, account, name)
    app = client(instance)
    promised = "text you updates" in app.get("/r/alpha").text
    assert promised == (name != "limited")
    answer = app.post("/r/alpha", request_form(firm, phone="+15550100199"))
    assert answer.status_int in (200, 303)
    with db.connection():
        (d,) = Dispatch.select().where(Dispatch.account == account)
        rows = list(OutboxMessage.select().where(OutboxMessage.dispatch == d))
    vendor_email = [r for r in rows if r.channel == "email" and r.kind == "vendor"]
    assert [r.recipient for r in vendor_email] == ["vera@plumb.example"]
    texts = [r for r in rows if r.channel == "sms"]
    assert (texts == []) == (name == "limited")  # only SMS pauses


def test_in_limited_mode_the_dashboard_reads_but_does_not_change(instance, firm, owner_app, stripe):
    put_in(instance, firm["account"], "limited")
    stripe.customers["cus_state"] = {"id": "cus_state"}  # the customer of the canceled one
    page = owner_app.get("/dashboard/settings")
    assert "read-only until you subscribe" in page.text
    refused = owner_app.post(
        "/dashboard/settings", {"csrf_token": csrf_of(page), "notify": "none"}, status=403
    )
    assert "Callers are still served" in refused.text
    with db.connection():
        assert Account.get_by_id(firm["account"].id).notify == "every"
    billing_page = owner_app.get("/dashboard/billing")
    assert "Canceled (limited)" in billing_page.text
    answer = owner_app.post("/dashboard/billing/checkout", {"csrf_token": csrf_of(billing_page)})
    assert answer.status_int == 303  # billing still works
    owner_app.post("/dashboard/account/delete", {"csrf_token": csrf_of(page), "confirm": "alpha"})
    with db.connection():
        assert Account.get_by_id(firm["account"].id).status == "deleting"


# --- trials ------------------------------------------------------------------------------


def test_accounts_from_before_billing_get_a_fresh_trial(make_instance, stripe, tmp_path):
    plain = make_instance()
    with db.connection():
        old = accounts.create_account(
            email="old@firm.example",
            name="Olga",
            business_name="Old Firm",
            slug="oldfirm",
            industry="legal",
            timezone="UTC",
        )
        Account.update(created_at=clock.now() - timedelta(days=400)).where(
            Account.id == old.id
        ).execute()
    clock.advance(timedelta(days=2))
    inst = make_instance(**st.config_sections(stripe))
    with db.connection():
        found = state_of(Account.get_by_id(old.id), inst.config, clock.now())
    assert (found.name, found.days_left(clock.now())) == ("trial", 14)
    assert plain.config.billing.provider == "none"


def test_accounts_show_says_the_state_and_the_days_left(instance, firm, tmp_path):
    from click.testing import CliRunner

    from outofoffice.cli import cli

    clock.advance(timedelta(days=4, hours=1))
    path = write_config(tmp_path / "config.toml", base_sections(tmp_path, **st_sections(instance)))
    result = CliRunner().invoke(cli, ["--config", str(path), "accounts", "show", "alpha"])
    assert result.exit_code == 0, result.output
    assert re.search(r"billing: +Trial \(10 days left\)", result.output), result.output


def st_sections(instance) -> dict:
    options = instance.config.billing
    return {
        "billing": {"provider": "stripe", "trial_days": options.trial_days},
        "billing__stripe": {
            "secret_key": options.stripe.secret_key,
            "webhook_secret": options.stripe.webhook_secret,
            "price_id": options.stripe.price_id,
            "api_url": options.stripe.api_url,
        },
    }


# --- deletion and privacy ------------------------------------------------------------------


def test_deleting_an_account_cancels_its_subscription_and_the_sweep_removes_the_ids(
    instance, firm, owner_app, stripe
):
    sub = post_subscription(owner_app, stripe, "active")
    customer = stripe.subscriptions[sub]["customer"]
    page = owner_app.get("/dashboard/account")
    stripe.fail_next(503)  # Stripe is down as the owner deletes
    owner_app.post("/dashboard/account/delete", {"csrf_token": csrf_of(page), "confirm": "alpha"})
    with db.connection():
        assert retention.sweep_all(instance.config)["account deletions"] == 1
    Mailbox(instance).deliver()
    assert stripe.subscriptions[sub]["status"] == "active"  # not yet: it is asked again
    clock.advance(timedelta(minutes=10))
    Mailbox(instance).deliver()
    assert stripe.subscriptions[sub]["status"] == "canceled"
    assert len(stripe.calls("DELETE", f"/v1/subscriptions/{sub}")) == 2
    with db.connection():
        stored = dump_database()
    assert sub not in stored and customer not in stored
    # Stripe's event about the cancel finds no account: answered, nothing else
    event = stripe.subscription_event("customer.subscription.deleted", sub)
    assert post_event(owner_app, event).text.strip() == "ignored"


def test_the_privacy_page_names_stripe_only_when_billing_is_on(make_instance, stripe):
    assert "Stripe" in client(make_instance(**st.config_sections(stripe))).get("/privacy").text
    assert "Stripe" not in client(make_instance()).get("/privacy").text


# --- billing off: nothing of it exists ------------------------------------------------------

BILLING_WORDS = re.compile(r"billing|stripe|trial|subscri", re.IGNORECASE)
TEMPLATES = Path(billing.__file__).resolve().parent.parent / "templates"


def every_get_path(instance, app, firm) -> list[str]:
    """Each page the app serves by GET, its parameters filled with the firm's own rows
    (a request made through the routing page gives the caller's and vendor's links)."""
    account = firm["account"]
    answer = app.post("/r/alpha", request_form(firm)).maybe_follow()
    vendor_mail = Mailbox(instance).deliver()
    with db.connection():
        d = Dispatch.get(Dispatch.account == account)
        login = path_of(accounts.login_link(instance, account))
    ids = object_ids(instance, firm, d)
    vendor_link = re.search(r"/v/[A-Za-z0-9_.~-]+", "".join(map(Mailbox.text, vendor_mail)))
    public = {
        "/r/<slug>": "/r/alpha",
        "/s/<token>": answer.request.path,
        "/v/<token>": vendor_link.group(0),
        "/auth/<token>": login,
    }
    paths = []
    rules = {r.rule for r in create_app(instance.config, instance).routes if r.method == "GET"}
    for rule in sorted(rules):
        path = fill(rule, ids) if rule.startswith("/dashboard") else public.get(rule, rule)
        if "<" not in path:  # left: the logo (an image) and /static (no pages)
            paths.append(path)
    return paths


@pytest.mark.billing_off
def test_with_billing_off_no_page_link_or_email_about_billing_exists(instance, firm, stripe):
    app = client(instance)
    paths = every_get_path(instance, app, firm)
    sign_in(app, instance, firm["account"])
    walked = []
    for path in paths:
        answer = app.get(path, status="*")
        assert answer.status_int < 500 or path == "/healthz", path  # no scheduler here
        if answer.status_int == 200 and answer.content_type.startswith("text/html"):
            assert not BILLING_WORDS.search(answer.text), path
            walked.append(path)
    assert len(walked) >= 25, walked
    assert app.get("/dashboard/billing", status=404)
    assert app.post(WEBHOOK, b"{}", status=404)
    for template in sorted((TEMPLATES / "email").iterdir()):
        if template.stem != "billing_notice":
            assert not BILLING_WORDS.search(template.read_text()), template.name
    clock.advance(timedelta(days=60))
    with db.connection():
        assert lifecycle.send_notices(instance) == 0
        assert BillingNotice.select().count() == 0
        assert AccountBilling.select().count() == 0
        assert "billing" not in instance.deliverers
    mails = Mailbox(instance).deliver()
    assert not any(BILLING_WORDS.search(m["Subject"]) for m in mails)
    assert stripe.requests == []


def test_billing_config_names_the_key_to_fix(tmp_path):
    def load(**stripe):
        sections = base_sections(tmp_path, billing={"provider": "stripe"}, billing__stripe=stripe)
        return config.load(write_config(tmp_path / "config.toml", sections))

    base = {
        "secret_key": st.SECRET_KEY,
        "webhook_secret": st.WEBHOOK_SECRET,
        "price_id": st.PRICE_ID,
    }
    with pytest.raises(config.ConfigError, match=r"\[billing.stripe\] price_id"):
        load(**(base | {"price_id": ""}))
    with pytest.raises(config.ConfigError, match=r"\[billing.stripe\] secret_key") as caught:
        load(**(base | {"secret_key": "pk_test_public"}))
    assert "pk_test_public" not in str(caught.value)
    with pytest.raises(config.ConfigError, match=r"webhook_secret"):
        load(**(base | {"webhook_secret": "not-a-secret"}))
    with pytest.raises(config.ConfigError, match=r"api_url"):
        load(**(base | {"api_url": "http://stripe.example.com"}))
    assert load(**base).billing.stripe.price_id == st.PRICE_ID


def test_the_checkout_url_carries_no_secret(instance, firm, owner_app, stripe):
    location = urlsplit(
        owner_app.post(
            "/dashboard/billing/checkout",
            {"csrf_token": csrf_of(owner_app.get("/dashboard/billing"))},
        ).location
    )
    assert st.SECRET_KEY not in location.geturl()
    assert parse_qs(location.query) == {}


def test_a_checkout_finished_after_the_deletion_is_canceled_too(instance, firm, owner_app, stripe):
    session = checkout(owner_app, stripe)
    page = owner_app.get("/dashboard/account")
    owner_app.post("/dashboard/account/delete", {"csrf_token": csrf_of(page), "confirm": "alpha"})
    event = stripe.complete_checkout(session, status="active")  # in another tab, at Stripe
    sub = event["data"]["object"]["subscription"]
    assert post_event(owner_app, event).status_int == 200
    Mailbox(instance).deliver()
    assert stripe.subscriptions[sub]["status"] == "canceled"


def test_a_reference_not_made_here_or_of_a_deleted_account_names_no_account(
    instance, firm, owner_app, stripe
):
    """A subscription whose metadata names an account by a reference this installation
    did not sign (another product on the same Stripe account), or names an account id
    since given to someone else, is nobody's here; a live one of ours whose account is
    gone is canceled."""
    session = checkout(owner_app, stripe)
    event = stripe.complete_checkout(session, status="active")
    sub = event["data"]["object"]["subscription"]
    account = firm["account"]
    forged = f"{account.id}-{int(clock.timestamp())}-{'A' * 43}"
    for reference in (forged, str(account.id)):
        stripe.subscriptions[sub]["metadata"] = {"account_ref": reference}
        changed = dict(event, id=event["id"] + reference[-3:])
        changed["data"] = {"object": dict(event["data"]["object"], client_reference_id=None)}
        assert post_event(owner_app, changed).text.strip() == "ignored"
    assert state(instance, account) == "trial"
    # the account the checkout named was deleted and its id is someone else's now
    signed = stripe.sessions[session]["form"]["client_reference_id"]
    account_id, stamp, signature = signed.split("-", 2)
    with db.connection():
        Account.update(created_at=clock.now() - timedelta(days=1)).where(
            Account.id == account.id
        ).execute()
    stripe.subscriptions[sub]["metadata"] = {"account_ref": signed}
    assert post_event(owner_app, event).text.strip() == "ignored"
    Mailbox(instance).deliver()
    assert stripe.subscriptions[sub]["status"] == "canceled"
    assert (account_id, stamp, len(signature)) == (str(account.id), stamp, 43)


def test_a_second_subscription_while_the_first_runs_is_canceled(instance, firm, owner_app, stripe):
    first = post_subscription(owner_app, stripe, "active")
    clock.advance(timedelta(hours=2))  # another checkout, opened in another tab
    session = checkout_anyway(instance, firm["account"], stripe)
    second = stripe.complete_checkout(session, status="active")
    assert post_event(owner_app, second).text.strip() == "handled"
    with db.connection():
        assert AccountBilling.get().subscription_id == first
    Mailbox(instance).deliver()
    assert stripe.subscriptions[second["data"]["object"]["subscription"]]["status"] == "canceled"
    assert stripe.subscriptions[first]["status"] == "active"


def checkout_anyway(instance, account, stripe) -> str:
    """A Checkout Session made as the Subscribe button made one earlier, in a tab left
    open (the page no longer offers the button once subscribed)."""
    with db.connection():
        url = billing.provider_for(instance.config).checkout_url(
            reference=lifecycle.reference(instance.keys, Account.get_by_id(account.id)),
            email=account.email,
            customer_id="",
            trial_ends=None,
            return_url=instance.url("/dashboard/billing"),
            key="another-tab",
        )
    return url.rsplit("/", 1)[1]


def test_a_checkout_at_the_end_of_an_hour_still_lasts_the_half_hour_stripe_asks(
    instance, firm, owner_app, stripe
):
    now = clock.now()
    clock.advance(now.replace(minute=59, second=59, microsecond=0) - now)
    checkout(owner_app, stripe)
    (call,) = stripe.calls("POST", "/v1/checkout/sessions")
    assert int(call["form"]["expires_at"]) - clock.timestamp() >= 60 * 60


def test_a_press_while_the_first_is_still_answered_waits_for_it(instance, firm, owner_app, stripe):
    stripe.fail_next(409)  # idempotency_key_in_use
    checkout(owner_app, stripe)
    first, second = stripe.calls("POST", "/v1/checkout/sessions")
    assert first["key"] == second["key"]


def test_a_lapsed_subscription_replaced_by_a_new_one_is_canceled(instance, firm, owner_app, stripe):
    old = post_subscription(owner_app, stripe, "active")
    clock.advance(timedelta(days=20))
    sign_in(owner_app, instance, firm["account"])
    stripe.set_status(old, "unpaid")
    post_event(owner_app, stripe.subscription_event("customer.subscription.updated", old))
    assert state(instance, firm["account"]) == "grace"
    new = post_subscription(owner_app, stripe, "active")
    assert state(instance, firm["account"]) == "active"
    Mailbox(instance).deliver()
    assert stripe.subscriptions[old]["status"] == "canceled"
    assert stripe.subscriptions[new]["status"] == "active"


@pytest.mark.no_database
def test_the_tolerance_is_300_seconds_either_way(tmp_path):
    """At the edge, with the time given rather than read, so the count is exact."""
    sections = base_sections(
        tmp_path, billing={"provider": "stripe"}, billing__stripe=dict(st_config())
    )
    provider = billing.provider_for(config.load(write_config(tmp_path / "c.toml", sections)))
    body = json.dumps({"id": "evt_edge", "type": "ping", "data": {"object": {}}}).encode()
    signed = st.sign(st.WEBHOOK_SECRET, body, 1_000_000)
    for now in (1_000_000 - 300, 1_000_000, 1_000_000 + 300):
        assert provider.verify(body, signed, now).id == "evt_edge"
    for now in (1_000_000 - 301, 1_000_000 + 301):
        with pytest.raises(SignatureError, match="300 s"):
            provider.verify(body, signed, now)


def st_config() -> dict:
    return {
        "secret_key": st.SECRET_KEY,
        "webhook_secret": st.WEBHOOK_SECRET,
        "price_id": st.PRICE_ID,
        "api_url": "http://127.0.0.1:9",
    }

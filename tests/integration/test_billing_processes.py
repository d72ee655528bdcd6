"""Stripe's webhooks handled by several processes of one installation on PostgreSQL:
each event once, each email once, however the deliveries and repeats are spread over
the processes. Outcomes are counted at the SMTP server and in the database."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from tests import stripe_standin as st
from tests.conftest import DATABASE
from tests.integration.test_scale_out import OWNER, Installation, at_once, query, to, wait_until
from tests.smtp_sink import SMTPSink

pytestmark = pytest.mark.postgresql_only


def query_write(sql: str, *params) -> None:
    with psycopg2.connect(DATABASE["url"]) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
    conn.close()


def post_event(server, event: dict, secret: str = st.WEBHOOK_SECRET):
    """A call for at_once: Stripe delivering one event to one process; its status."""
    body = json.dumps(event).encode()

    def call() -> int:
        request = urllib.request.Request(
            server.url + "/billing/stripe/webhook",
            data=body,
            method="POST",
            headers={
                "Stripe-Signature": st.sign(secret, body, int(time.time())),
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    return call


def test_events_spread_over_two_processes_act_once_and_email_once(tmp_path, servers):
    with SMTPSink() as sink, st.StripeStandIn() as stripe:
        inst = Installation(tmp_path, sink, servers, **st.config_sections(stripe))
        inst.set_up()
        (account_id,) = query("SELECT id FROM account WHERE slug = 'alpha'")[0]
        # the owner subscribed at Stripe a while ago; the renewal has just failed
        stripe.customers["cus_alpha"] = {"id": "cus_alpha"}
        now = int(time.time())
        utc_now = datetime.now(UTC).replace(tzinfo=None)
        stripe.subscriptions["sub_alpha"] = {
            "id": "sub_alpha",
            "object": "subscription",
            "customer": "cus_alpha",
            "status": "past_due",
            "current_period_end": now + 30 * st.DAY,
            "ended_at": None,
            "metadata": {},
        }
        query_write(
            "INSERT INTO account_billing (account_id, trial_started_at, trial_ends_at, "
            "customer_id, subscription_id, status, checked_at) VALUES (%s, %s, %s, "
            "'cus_alpha', 'sub_alpha', 'active', %s)",
            account_id,
            utc_now - timedelta(days=40),
            utc_now - timedelta(days=26),
            utc_now - timedelta(days=1),
        )
        a, b = inst.serve("m1"), inst.serve("m2")
        events = [stripe.invoice_event("invoice.payment_failed", "sub_alpha") for _ in range(3)]
        events += [
            stripe.subscription_event("customer.subscription.updated", "sub_alpha")
            for _ in range(3)
        ]
        calls = [post_event((a, b)[n % 2], e) for e in events for n in range(4)]
        assert at_once(calls) == [200] * len(calls)
        assert query("SELECT count(*) FROM billing_event") == [(len(events),)]
        assert query("SELECT status FROM account_billing") == [("past_due",)]
        assert query("SELECT kind FROM billing_notice") == [("payment_failed",)]
        wait_until(lambda: any(m["Subject"] == "A payment failed" for m in to(sink, OWNER)))
        failed = [m for m in to(sink, OWNER) if m["Subject"] == "A payment failed"]
        assert len(failed) == 1

"""A local stand-in for Stripe's API, speaking its documented contract, and the
webhook events Stripe would send, signed as Stripe signs them.

- Every request: ``Authorization: Bearer <secret key>`` (else 401), the
  ``Stripe-Version`` it pins is recorded; POST bodies are form-encoded.
- ``Idempotency-Key`` on a POST: the same key with the same parameters answers the
  first result again with ``Idempotent-Replayed: true``; with other parameters, 400
  ``idempotency_error``.
- ``POST /v1/checkout/sessions`` (subscription mode: a known price, success_url;
  ``subscription_data[trial_end]`` at least 48 hours ahead), ``POST
  /v1/billing_portal/sessions`` (a known customer), ``GET`` and ``DELETE
  /v1/subscriptions/{id}`` (404 ``resource_missing`` for an unknown one).
- Errors are ``{"error": {"type", "code", "message"}}``.

The signature is written here again from Stripe's documentation, not imported from the
product, so a mistake in one is not repeated in the other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from tests.standin import JsonHandler, StandIn

SECRET_KEY = "sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_" + "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
OLD_WEBHOOK_SECRET = "whsec_" + "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0l"
PRICE_ID = "price_1Pro0ffice"
SUBSCRIPTION = re.compile(r"/v1/subscriptions/([A-Za-z0-9_]+)")
DAY = 86400


def config_sections(standin: StripeStandIn, secret_file: str = "", **billing) -> dict:
    """An installation that bills through this stand-in (webhook secrets inline, or
    from ``secret_file``)."""
    stripe = {"secret_key": SECRET_KEY, "price_id": PRICE_ID, "api_url": standin.url}
    if secret_file:
        stripe["webhook_secret_file"] = secret_file
    else:
        stripe["webhook_secret"] = WEBHOOK_SECRET
    return {
        "billing": {"provider": "stripe", "trial_days": 14, "grace_days": 14} | billing,
        "billing__stripe": stripe,
    }


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Stripe-Signature as Stripe's docs give it: t=<unix time>,v1=<hex HMAC-SHA256 of
    "t.body" keyed with the endpoint secret>."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def error(kind: str, message: str, code: str = "") -> dict:
    return {"error": {"type": kind, "code": code, "message": message}}


class StripeStandIn(StandIn):
    """Start with ``.start()``. ``now`` is the stand-in's clock (the tests' moved one).
    ``requests`` records each call (method, path, form, headers); ``fail_next`` plans
    refusals; the ``complete_checkout``, ``set_status`` and ``event`` helpers play the
    part of the owner at Stripe's pages and of Stripe's webhooks."""

    def __init__(self, now: Callable[[], float] = time.time, secret_key: str = SECRET_KEY):
        super().__init__()
        self.now = now
        self.secret_key = secret_key
        self.requests: list[dict] = []
        self.sessions: dict[str, dict] = {}
        self.portals: list[dict] = []
        self.customers: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.idempotent: dict[str, tuple[dict, int, dict]] = {}
        self.planned: list[tuple[int, bool]] = []  # (status, after processing)
        self.lock = threading.Lock()

    def fail_next(self, status: int = 500, times: int = 1, after_processing: bool = False):
        """The next ``times`` requests get ``status``; ``after_processing``: the request
        takes effect, then the answer is lost (a 500 after the work was done)."""
        with self.lock:
            self.planned.extend([(status, after_processing)] * times)

    def calls(self, method: str, path_start: str) -> list[dict]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r["method"] == method and r["path"].startswith(path_start)
            ]

    # --- what happens at Stripe's own pages ---

    def complete_checkout(self, session_id: str, status: str = "") -> dict:
        """The owner paid (or started a Stripe trial) on the Checkout page: a customer and
        a subscription exist; returns the checkout.session.completed event."""
        with self.lock:
            session = self.sessions[session_id]
            form = session["form"]
            customer = form.get("customer") or "cus_" + secrets.token_hex(7)
            self.customers.setdefault(
                customer, {"id": customer, "email": form.get("customer_email")}
            )
            now = int(self.now())
            trial_end = form.get("subscription_data[trial_end]")
            days = form.get("subscription_data[trial_period_days]")
            if days:
                trial_end = str(now + int(days) * DAY)
            sub_id = "sub_" + secrets.token_hex(7)
            self.subscriptions[sub_id] = {
                "id": sub_id,
                "object": "subscription",
                "customer": customer,
                "status": status or ("trialing" if trial_end else "active"),
                "current_period_start": now,
                "current_period_end": int(trial_end) if trial_end else now + 30 * DAY,
                "trial_end": int(trial_end) if trial_end else None,
                "ended_at": None,
                "canceled_at": None,
                "metadata": {
                    k[len("subscription_data[metadata][") : -1]: v
                    for k, v in form.items()
                    if k.startswith("subscription_data[metadata][")
                },
                "items": {
                    "object": "list",
                    "data": [{"price": {"id": form["line_items[0][price]"]}}],
                },
            }
            session.update(customer=customer, subscription=sub_id, status="complete")
            obj = dict(session["object"], customer=customer, subscription=sub_id, status="complete")
        return self.event("checkout.session.completed", obj)

    def set_status(self, sub_id: str, status: str, period_days: int | None = None) -> dict:
        """Stripe moved the subscription (a renewal, a failed charge, a cancel)."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            now = int(self.now())
            sub["status"] = status
            if period_days is not None:
                sub["current_period_start"] = now
                sub["current_period_end"] = now + period_days * DAY
            if status == "canceled":
                sub["ended_at"] = sub["canceled_at"] = now
            return dict(sub)

    def event(self, kind: str, obj: dict) -> dict:
        return {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(self.now()),
            "livemode": False,
            "pending_webhooks": 1,
            "type": kind,
            "data": {"object": obj},
        }

    def invoice_event(self, kind: str, sub_id: str) -> dict:
        sub = self.subscriptions[sub_id]
        return self.event(
            kind,
            {
                "id": "in_" + secrets.token_hex(7),
                "object": "invoice",
                "customer": sub["customer"],
                "subscription": sub_id,
                "status": "paid" if kind == "invoice.paid" else "open",
            },
        )

    def subscription_event(self, kind: str, sub_id: str) -> dict:
        return self.event(kind, dict(self.subscriptions[sub_id]))

    # --- the API ---

    def handler(self) -> type[JsonHandler]:
        standin = self

        class Handler(JsonHandler):
            content_type = "application/json"

            def _handle(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                record = {
                    "method": method,
                    "path": self.path,
                    "form": form,
                    "version": self.headers.get("Stripe-Version", ""),
                    "key": self.headers.get("Idempotency-Key", ""),
                    "content_type": self.headers.get("Content-Type", ""),
                }
                with standin.lock:
                    standin.requests.append(record)
                if self.headers.get("Authorization", "") != f"Bearer {standin.secret_key}":
                    return self._answer(
                        401,
                        error("invalid_request_error", "Invalid API Key provided: sk_test_****"),
                    )
                with standin.lock:
                    plan = standin.planned.pop(0) if standin.planned else None
                if plan and not plan[1]:
                    return self._answer(plan[0], error("api_error", "Something went wrong."))
                key = record["key"]
                if method == "POST" and key:
                    with standin.lock:
                        seen = standin.idempotent.get(key)
                    if seen is not None:
                        if seen[0] != form:
                            return self._answer(
                                400,
                                error(
                                    "idempotency_error",
                                    "Keys for idempotent requests can only be used with the "
                                    "same parameters they were first used with.",
                                ),
                            )
                        return self._answer(seen[1], seen[2], {"Idempotent-Replayed": "true"})
                status, body = standin._route(method, self.path, form)
                if method == "POST" and key:
                    with standin.lock:
                        standin.idempotent[key] = (form, status, body)
                if plan:  # the work is done, the answer lost
                    return self._answer(plan[0], error("api_error", "Something went wrong."))
                return self._answer(status, body)

            def do_POST(self):
                self._handle("POST")

            def do_GET(self):
                self._handle("GET")

            def do_DELETE(self):
                self._handle("DELETE")

        return Handler

    def _route(self, method: str, path: str, form: dict) -> tuple[int, dict]:
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._checkout(form)
        if method == "POST" and path == "/v1/billing_portal/sessions":
            with self.lock:
                if form.get("customer") not in self.customers:
                    return 400, error(
                        "invalid_request_error",
                        f"No such customer: '{form.get('customer')}'",
                        "resource_missing",
                    )
                portal = {
                    "id": "bps_" + secrets.token_hex(7),
                    "object": "billing_portal.session",
                    "customer": form["customer"],
                    "return_url": form.get("return_url"),
                    "url": "https://billing.stripe.com/p/session/test_" + secrets.token_hex(8),
                }
                self.portals.append(portal)
            return 200, portal
        if (found := SUBSCRIPTION.fullmatch(path)) and method in ("GET", "DELETE"):
            with self.lock:
                sub = self.subscriptions.get(found.group(1))
                if sub is None:
                    return 404, error(
                        "invalid_request_error",
                        f"No such subscription: '{found.group(1)}'",
                        "resource_missing",
                    )
                if method == "DELETE":
                    if sub["status"] == "canceled":
                        return 400, error(
                            "invalid_request_error",
                            "A canceled subscription can only update its cancellation_details.",
                        )
                    sub["status"] = "canceled"
                    sub["ended_at"] = sub["canceled_at"] = int(self.now())
                return 200, dict(sub)
        return 404, error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _checkout(self, form: dict) -> tuple[int, dict]:
        invalid = "invalid_request_error"
        if form.get("mode") != "subscription":
            return 400, error(invalid, "Missing required param: mode.", "parameter_missing")
        if form.get("line_items[0][price]") != PRICE_ID:
            price = form.get("line_items[0][price]")
            return 400, error(invalid, f"No such price: '{price}'", "resource_missing")
        if not form.get("success_url"):
            return 400, error(invalid, "Missing required param: success_url.", "parameter_missing")
        trial_end = form.get("subscription_data[trial_end]")
        if trial_end and int(trial_end) < self.now() + 2 * DAY:
            return 400, error(
                invalid,
                "The `trial_end` date has to be at least 2 days in the future.",
                "parameter_invalid_integer",
            )
        expires_at = form.get("expires_at")
        if expires_at and not self.now() + 30 * 60 <= int(expires_at) <= self.now() + DAY:
            return 400, error(
                invalid,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                "Checkout Session creation.",
                "parameter_invalid_integer",
            )
        if form.get("customer") and form["customer"] not in self.customers:
            return 400, error(
                invalid, f"No such customer: '{form['customer']}'", "resource_missing"
            )
        session_id = "cs_test_" + secrets.token_hex(12)
        obj = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": form.get("client_reference_id"),
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "subscription": None,
            "status": "open",
            "success_url": form["success_url"],
            "cancel_url": form.get("cancel_url"),
            "metadata": {
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
            "url": "https://checkout.stripe.com/c/pay/" + session_id,
        }
        with self.lock:
            self.sessions[session_id] = {"form": form, "object": obj}
        return 200, obj

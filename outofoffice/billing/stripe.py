"""Stripe, through its documented HTTP API with the standard library: form-encoded
POSTs with the secret key as a Bearer token, a pinned API version, an Idempotency-Key
on every POST (kept across our one retry, so a lost answer never makes a second
checkout), and webhooks verified as Stripe's docs ask (Stripe-Signature's ``t`` and
``v1``, HMAC-SHA256 of ``t.body``, any configured secret, 300 s tolerance)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

from outofoffice import clock
from outofoffice.billing.base import (
    FINAL,
    BillingError,
    BillingProvider,
    Event,
    SignatureError,
    Subscription,
)
from outofoffice.channels import http
from outofoffice.channels.base import DeliveryError

log = logging.getLogger(__name__)

API_VERSION = "2024-06-20"
TOLERANCE_SECONDS = 300
# Checkout takes a trial_end at least two days ahead; a shorter rest goes in whole days.
MIN_TRIAL_END = timedelta(hours=48, minutes=5)
RETRY_WAIT_SECONDS = 1.0
IN_USE = 409  # idempotency_key_in_use
CHECKOUT_OPEN = timedelta(hours=2)  # from the start of the hour it was made in


def _time(value) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    return None


def _id(value) -> str:
    """An id the API gives either bare or as the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


KEY_IN_WORDS = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_\S*")
REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,200}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def _reference(value) -> str:
    return value if isinstance(value, str) and REFERENCE.fullmatch(value) else ""


def _error_words(status: int, body: str) -> str:
    """Stripe's own words for a refusal (they name no secret), else the status."""
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    message = KEY_IN_WORDS.sub("(the configured key)", str(message or "no explanation given"))
    return f"Stripe {status}: {message}"[:300]


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The Stripe-Signature Stripe sends for this body at this time."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def parse_event(data) -> Event:
    """What a verified event names: the subscription, the customer, the account."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise SignatureError("the body is not a Stripe event")
    kind = data.get("type") if isinstance(data.get("type"), str) else ""
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else {}
    obj = obj if isinstance(obj, dict) else {}
    subscription = ""
    reference = ""
    if kind.startswith("checkout.session."):
        subscription = _id(obj.get("subscription"))
        reference = _reference(obj.get("client_reference_id"))
    elif kind.startswith("customer.subscription."):
        subscription = _id(obj.get("id"))
    elif kind.startswith("invoice."):
        parent = obj.get("parent") if isinstance(obj.get("parent"), dict) else {}
        details = parent.get("subscription_details") or {}
        subscription = _id(obj.get("subscription")) or _id(
            details.get("subscription") if isinstance(details, dict) else None
        )
    customer = _id(obj.get("customer")) if kind != "customer.created" else _id(obj.get("id"))
    created = data.get("created") if isinstance(data.get("created"), int) else 0
    return Event(
        id=data["id"],
        type=kind,
        subscription_id=subscription,
        customer_id=customer,
        account_ref=reference,
        created=created,
        raw=data,
    )


class StripeBilling(BillingProvider):
    name = "stripe"

    @property
    def options(self):
        return self.config.billing.stripe

    def _call(self, method: str, path: str, params: dict | None = None, key: str = "") -> dict:
        """One API call; a POST that finds Stripe unreachable, failing or still busy
        with the same key is tried once more with the same Idempotency-Key, which Stripe
        answers with the first result."""
        url = self.options.api_url.rstrip("/") + path
        data = urllib.parse.urlencode(params or {}).encode() if method == "POST" else None
        headers = {
            "Authorization": f"Bearer {self.options.secret_key}",
            "Stripe-Version": API_VERSION,
            "Accept": "application/json",
        }
        if method == "POST":
            # the parameters' digest in the key: the same request again is the same
            # checkout, a changed one (a day less of trial) is a new one, not an error
            digest = hashlib.sha256(data).hexdigest()[:16]
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Idempotency-Key"] = f"{key}-{digest}"
        tries = 2 if method == "POST" else 1
        for attempt in range(tries):
            # api_url is validated as https (http only on loopback)
            request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
            try:
                _, answer = http.post(request, who="Stripe", error_words=_error_words)
                return answer
            except DeliveryError as exc:
                # 409: the same key is still being answered (a double press)
                retryable = not exc.permanent or exc.status == IN_USE
                again = retryable and attempt + 1 < tries
                if not again:
                    raise BillingError(str(exc), exc.status, exc.status == 404) from None
                log.warning("stripe: %s %s: %s; trying once more", method, path, exc)
                time.sleep(RETRY_WAIT_SECONDS)
        raise AssertionError("unreachable")

    def checkout_url(
        self,
        *,
        reference: str,
        email: str,
        customer_id: str,
        trial_ends: datetime | None,
        return_url: str,
        key: str,
    ) -> str:
        params = {
            "mode": "subscription",
            "line_items[0][price]": self.options.price_id,
            "line_items[0][quantity]": "1",
            "client_reference_id": reference,
            "success_url": return_url + "?checkout=done",
            "cancel_url": return_url,
            "metadata[account_ref]": reference,
            "subscription_data[metadata][account_ref]": reference,
        }
        # an open checkout lasts one to two hours (Stripe takes 30 minutes to a day),
        # the same for every press within this hour: an old tab left open cannot start
        # a second subscription a day later
        hour = clock.now().replace(minute=0, second=0, microsecond=0)
        params["expires_at"] = str(int((hour + CHECKOUT_OPEN).replace(tzinfo=UTC).timestamp()))
        if customer_id:
            params["customer"] = customer_id
        else:
            params["customer_email"] = email
        left = (trial_ends - clock.now()) if trial_ends else timedelta(0)
        if left >= MIN_TRIAL_END:
            params["subscription_data[trial_end]"] = str(
                int(trial_ends.replace(tzinfo=UTC).timestamp())
            )
        elif left > timedelta(0):
            params["subscription_data[trial_period_days]"] = str(
                max(1, math.ceil(left / timedelta(days=1)))
            )
        answer = self._call("POST", "/v1/checkout/sessions", params, key)
        return self._url(answer, "Checkout Session")

    def portal_url(self, *, customer_id: str, return_url: str, key: str) -> str:
        params = {"customer": customer_id, "return_url": return_url}
        answer = self._call("POST", "/v1/billing_portal/sessions", params, key)
        return self._url(answer, "portal session")

    @staticmethod
    def _url(answer: dict, what: str) -> str:
        url = answer.get("url")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise BillingError(f"Stripe's {what} names no https:// address")
        return url

    def subscription(self, subscription_id: str) -> Subscription:
        quoted = urllib.parse.quote(subscription_id, safe="")
        answer = self._call("GET", f"/v1/subscriptions/{quoted}")
        if answer.get("id") != subscription_id or not isinstance(answer.get("status"), str):
            raise BillingError("Stripe's answer is not the subscription asked for")
        period_end = answer.get("current_period_end")
        if period_end is None:  # newer API versions keep it on the items
            items = (answer.get("items") or {}).get("data") or [{}]
            period_end = items[0].get("current_period_end") if isinstance(items[0], dict) else None
        metadata = answer.get("metadata") if isinstance(answer.get("metadata"), dict) else {}
        return Subscription(
            id=subscription_id,
            customer=_id(answer.get("customer")),
            status=answer["status"],
            period_end=_time(period_end),
            ended_at=_time(answer.get("ended_at")),
            account_ref=_reference(metadata.get("account_ref")),
        )

    def cancel(self, subscription_id: str) -> None:
        quoted = urllib.parse.quote(subscription_id, safe="")
        try:
            self._call("DELETE", f"/v1/subscriptions/{quoted}")
        except BillingError as exc:
            if exc.missing:
                return
            # Stripe refuses to cancel what has ended already: that is done too
            if exc.status == 400 and self.subscription(subscription_id).status in FINAL:
                return
            raise

    def verify(self, body: bytes, signature: str, now: float) -> Event:
        pairs = [item.split("=", 1) for item in signature.split(",") if "=" in item]
        stamps = [value.strip() for name, value in pairs if name.strip() == "t"]
        # a v1 that is not 64 hex digits can match nothing: left out before comparing
        given = [
            value.strip().encode()
            for name, value in pairs
            if name.strip() == "v1" and HEX_SIGNATURE.fullmatch(value.strip())
        ]
        if len(stamps) != 1 or not TIMESTAMP.fullmatch(stamps[0]) or not given:
            raise SignatureError("Stripe-Signature needs one t= and at least one v1=")
        if abs(now - int(stamps[0])) > TOLERANCE_SECONDS:
            raise SignatureError("the signature's timestamp is outside the 300 s tolerance")
        signed = stamps[0].encode() + b"." + body
        secrets = [s.strip() for s in self.options.webhook_secret.splitlines() if s.strip()]
        matched = False
        for secret in secrets:
            expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
            for candidate in given:  # every pair compared: the time says nothing
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureError("no v1 signature matches a configured webhook secret")
        try:
            data = json.loads(body)
        except ValueError:
            raise SignatureError("the body is not JSON") from None
        return parse_event(data)

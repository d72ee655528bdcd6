"""Push notifications: what a vendor's phone shows for an offer, the address their
ntfy app subscribes to, its QR code, and a test message.

The payload is ours, not ntfy's (channels/push/ntfy.py turns it into ntfy's publish
request): a title, a message, a priority, the page to open and the buttons. The
buttons post to the signed action links the vendor's email carries, so a press acts
exactly as a click on the email's link does, once. Resolved stays on the vendor's page
(SPEC section 11): a job is done after the call, not from the lock screen.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import segno

from outofoffice import db, dispatch, outbox
from outofoffice.channels.base import DeliveryError
from outofoffice.keys import new_push_topic
from outofoffice.models import OutboxMessage

if TYPE_CHECKING:
    from outofoffice.instance import Instance
    from outofoffice.models import Dispatch, Vendor

DESCRIPTION_MAX = 300  # a lock screen shows a few lines; the page has the rest
BUTTONS = (("accept", "Accept"), ("decline", "Decline"))  # Resolved: on the page only


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def offer_payload(instance: Instance, d: Dispatch, vendor: Vendor) -> str:
    """The push for one offer, as JSON to store (encrypted) in the outbox. The vendor
    sees only what the dispatch needs (SPEC section 3): the caller's name and phone,
    the subject, the category, the description, the firm and its phone, the reference."""
    account = d.account
    emergency = bool(d.category_id and d.category.emergency)
    caller = dispatch.caller(instance, d)
    category = d.category_label or "Request"
    links = {
        action: instance.url(f"/v/{dispatch.action_token(instance, d, vendor, action)}")
        for action, _ in BUTTONS
    }
    lines = [
        f"{caller['name']}, {caller['phone']}",
        dispatch.subject_text(d),
        _cut(caller["description"], DESCRIPTION_MAX),
        f"Ref {d.reference}"
        + (f" · {account.business_name} {account.contact_phone}" if account.contact_phone else ""),
    ]
    return json.dumps(
        {
            "title": f"{'URGENT: ' if emergency else ''}{category} for {account.business_name}",
            "message": "\n".join(line for line in lines if line),
            "priority": "urgent" if emergency else "high",
            "click": links["accept"],
            "actions": [
                {"label": label, "url": links[action], "method": "POST"}
                for action, label in BUTTONS
            ],
        }
    )


def trial_payload(vendor: Vendor) -> str:
    firm = vendor.account.business_name
    return json.dumps(
        {
            "title": f"Test from {firm}",
            "message": (
                f"Hello {vendor.name}: requests from {firm} will reach this phone like "
                "this, with Accept and Decline buttons."
            ),
            "priority": "default",
            "click": "",
            "actions": [],
        }
    )


def subscribe_url(instance: Instance, vendor: Vendor) -> str:
    """The address the vendor's ntfy app subscribes to: the server and their topic."""
    return f"{instance.config.push.ntfy_url.rstrip('/')}/{vendor.push_topic}"


def qr_svg(url: str) -> str:
    """The QR code of ``url`` as inline SVG markup (no script, no style attribute, so
    the pages' Content-Security-Policy lets it be), dark on light in any theme."""
    code = segno.make(url, error="m")
    return code.svg_inline(
        scale=5,
        title="QR code of the subscribe address",
        svgclass="qr",
        lineclass=None,
        light="#fff",
        dark="#000",
    )


def renew_topic(vendor: Vendor) -> str:
    """A new topic for a vendor who lost their phone (or shared the old one): the old
    topic gets nothing more; they subscribe again to the new address."""
    with db.write():
        old, vendor.push_topic = vendor.push_topic, new_push_topic()
        vendor.save(only=[type(vendor).push_topic])
        # what still waits to go is for the new phone, not the lost one
        OutboxMessage.update(recipient=vendor.push_topic).where(
            OutboxMessage.channel == "push",
            OutboxMessage.status == "queued",
            OutboxMessage.vendor == vendor.id,
            OutboxMessage.recipient == old,
        ).execute()
    return vendor.push_topic


def is_on(instance: Instance) -> bool:
    return "push" in instance.deliverers


def send_test(instance: Instance, vendor: Vendor) -> OutboxMessage:
    """Queue a test push to the vendor's topic; the outbox sends it within seconds."""
    if not is_on(instance):
        raise DeliveryError("push is off: set [push] ntfy_url", permanent=True)
    if not vendor.push_topic:
        raise DeliveryError(f"vendor {vendor.email} has no push topic", permanent=True)
    with db.write():
        db.lock(("push-test", vendor.id))
        waiting = OutboxMessage.get_or_none(
            OutboxMessage.channel == "push",
            OutboxMessage.kind == "test",
            OutboxMessage.status == "queued",
            OutboxMessage.vendor == vendor.id,
        )
        if waiting is not None:  # one at a time: a button pressed ten times is one test
            return waiting
        row = outbox.enqueue_message(
            instance.keys,
            channel="push",
            to=vendor.push_topic,
            body=trial_payload(vendor),
            kind="test",
            account=vendor.account,
            vendor=vendor,
        )
    outbox.wake()
    return row


def send_test_now(instance: Instance, vendor: Vendor) -> str:
    """Publish a test push at once, past the outbox, to prove a live setup (`outofoffice
    check --send-test-push`); ntfy's id for the message. Raises DeliveryError with
    ntfy's own reason (a wrong token, a server out of reach)."""
    deliverer = instance.deliverers.get("push")
    if deliverer is None:
        raise DeliveryError("push is off: set [push] ntfy_url", permanent=True)
    if not vendor.push_topic:
        raise DeliveryError(f"vendor {vendor.email} has no push topic", permanent=True)
    row = OutboxMessage(
        channel="push",
        kind="test",
        recipient=vendor.push_topic,
        body_text=instance.keys.encrypt(trial_payload(vendor)),
    )
    receipt = deliverer.send(deliverer.compose(row, instance.keys))
    return receipt.provider_id if receipt else ""

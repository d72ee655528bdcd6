"""A deleted account's subscription, canceled through the provider's API from the
outbox: a Stripe that is down when the owner deletes is asked again until it answers,
and the account's data need not wait for it."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from outofoffice import db, outbox
from outofoffice.billing import provider_for
from outofoffice.billing.base import FINAL, BillingError
from outofoffice.channels.base import Deliverer, DeliveryError, Receipt
from outofoffice.models import Account, AccountBilling, OutboxMessage

if TYPE_CHECKING:
    from outofoffice.instance import Instance
    from outofoffice.keys import Keys

CHANNEL = "billing"
# Tried for a week: a subscription left running would charge a firm that has gone.
LIFETIME = timedelta(days=7)


def queue_cancel(instance: Instance, subscription_id: str) -> bool:
    """Inside the caller's transaction: cancel this subscription from the outbox, as a
    row of no account (the sweep deletes the account before Stripe may have answered);
    once, while one such row waits."""
    # named by a digest of the id, never the id itself (that is stored encrypted alone)
    named = "cancel_" + instance.keys.sign(CHANNEL, subscription_id)[:32]
    waiting = OutboxMessage.select().where(
        OutboxMessage.message_id.startswith(named), OutboxMessage.status == "queued"
    )
    if waiting.exists():
        return False
    outbox.enqueue_message(
        instance.keys,
        channel=CHANNEL,
        to=instance.config.billing.provider,
        body=subscription_id,
        kind="billing",
        message_id=f"{named}_{secrets.token_hex(4)}",
        lifetime=LIFETIME,
    )
    return True


def queue_cancellation(instance: Instance, account: Account) -> bool:
    """The deletion's part, in its transaction and under the account's billing lock, so
    a webhook storing a new subscription meanwhile is either seen here or sees the
    deletion."""
    db.lock(("billing", account.id))
    row = AccountBilling.get_or_none(AccountBilling.account == account)
    if row is None or not row.subscription_id or row.status in FINAL:
        return False
    return queue_cancel(instance, row.subscription_id)


class Cancellation(Deliverer):
    channel = CHANNEL

    def __init__(self, config):
        super().__init__(config)
        self.provider = provider_for(config)
        self.name = self.provider.name

    def compose(self, row: OutboxMessage, keys: Keys) -> str:
        return keys.decrypt(row.body_text)

    def send(self, message: str) -> Receipt:
        try:
            self.provider.cancel(message)
        except BillingError as exc:
            # only a refusal of the request itself is for good: a key that was rotated
            # or lacks a permission (401, 403) is tried again until the admin fixes it
            permanent = exc.status == 400
            raise DeliveryError(str(exc), permanent=permanent, status=exc.status) from None
        return Receipt()  # the id stays encrypted: the sweep leaves none in the clear

    def describe(self) -> str:
        return f"{self.name} subscription cancellations"

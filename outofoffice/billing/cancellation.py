"""A deleted account's subscription, canceled through the provider's API from the
outbox: a Stripe that is down when the owner deletes is asked again until it answers,
and the account's data need not wait for it."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from outofoffice import outbox
from outofoffice.billing import provider_for
from outofoffice.billing.base import FINAL, BillingError
from outofoffice.channels.base import Deliverer, DeliveryError, Receipt
from outofoffice.models import Account, AccountBilling

if TYPE_CHECKING:
    from outofoffice.instance import Instance
    from outofoffice.keys import Keys
    from outofoffice.models import OutboxMessage

CHANNEL = "billing"
# Tried for a week: a subscription left running would charge a firm that has gone.
LIFETIME = timedelta(days=7)


def queue_cancellation(instance: Instance, account: Account) -> bool:
    """Inside the deletion's transaction: the cancel, as an outbox row of no account (the
    sweep deletes the account before Stripe may have answered)."""
    row = AccountBilling.get_or_none(AccountBilling.account == account)
    if row is None or not row.subscription_id or row.status in FINAL:
        return False
    outbox.enqueue_message(
        instance.keys,
        channel=CHANNEL,
        to=instance.config.billing.provider,
        body=row.subscription_id,
        kind="billing",
        lifetime=LIFETIME,
    )
    return True


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
            permanent = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
            raise DeliveryError(str(exc), permanent=permanent, status=exc.status) from None
        return Receipt()  # the id stays encrypted: the sweep leaves none in the clear

    def describe(self) -> str:
        return f"{self.name} subscription cancellations"

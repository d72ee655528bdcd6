"""What a billing provider does for us: start a checkout, open its portal, tell the
truth about a subscription, cancel one, and vouch for its webhooks. Stripe is the one
kind today (stripe.py); another goes in a module of its own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outofoffice.config import Config

# The provider's statuses that give full service, and those that mean it is over.
LIVE = ("active", "trialing")
ENDED = ("canceled", "unpaid", "incomplete_expired", "paused")
FINAL = ("canceled", "incomplete_expired")  # after these a subscription never changes


class BillingError(Exception):
    """The provider could not be asked or refused: ``status`` is its HTTP answer, if any;
    ``missing`` is true when the thing asked about does not exist there."""

    def __init__(self, reason: str, status: int | None = None, missing: bool = False):
        super().__init__(reason)
        self.status = status
        self.missing = missing


class SignatureError(Exception):
    """A webhook that does not prove it came from the provider."""


@dataclass(frozen=True)
class Subscription:
    """A subscription as the provider says it is now."""

    id: str
    customer: str
    status: str
    period_end: datetime | None
    ended_at: datetime | None
    account_ref: str  # the billing reference the checkout set in its metadata


@dataclass(frozen=True)
class Event:
    """A verified webhook event: what it is about, never trusted for the state."""

    id: str
    type: str
    subscription_id: str = ""
    customer_id: str = ""
    account_ref: str = ""  # the checkout's client_reference_id
    created: int = 0
    raw: dict = field(default_factory=dict, repr=False)


class BillingProvider(ABC):
    name = ""

    def __init__(self, config: Config):
        self.config = config

    @abstractmethod
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
        """Where the owner subscribes; ``reference`` names the account to the provider
        (see lifecycle.reference); ``trial_ends`` is passed on so nobody pays early;
        ``key`` makes a repeat of the same request the same checkout."""

    @abstractmethod
    def portal_url(self, *, customer_id: str, return_url: str, key: str) -> str:
        """Where the owner changes the card, the plan or cancels."""

    @abstractmethod
    def subscription(self, subscription_id: str) -> Subscription:
        """The subscription as it is now (BillingError when it cannot be read)."""

    @abstractmethod
    def cancel(self, subscription_id: str) -> None:
        """End the subscription now; one already gone counts as done."""

    @abstractmethod
    def verify(self, body: bytes, signature: str, now: float) -> Event:
        """The event in a webhook's body, or SignatureError."""

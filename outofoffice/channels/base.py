"""What every channel's deliverer does: turn an outbox row into a message, hand it
over, say how it failed. Email (mail/), SMS (sms/), push (push/) and webhooks
(webhook.py) are one subclass each; the outbox drives them all the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outofoffice.config import Config
    from outofoffice.keys import Keys
    from outofoffice.models import OutboxMessage

CHANNELS = ("email", "sms", "push", "webhook", "billing")  # billing: a provider's cancels


class DeliveryError(Exception):
    """A failed send. ``permanent`` ones are not retried (dead letter at once);
    ``retry_after``: the provider asked to wait that many seconds; ``status``: the HTTP
    status the far end answered, when it answered one."""

    def __init__(
        self,
        reason: str,
        permanent: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class Receipt:
    """What the far end said when it took a message: its id for it (a Twilio message
    SID, which its delivery reports name) and the HTTP status it answered."""

    provider_id: str = ""
    status: int | None = None


class Deliverer(ABC):
    """One per channel and instance, chosen by config."""

    channel = ""  # one of CHANNELS
    name = ""  # the backend or provider, as config names it
    # Failures in a row mean the provider is down, so a circuit breaker holds the rest
    # back; False where each row goes somewhere of its own (webhook endpoints).
    one_provider = True
    # Messages of one pass sent side by side (outofoffice.senders), each sender with a
    # session of its own.
    parallel = 1

    def __init__(self, config: Config):
        self.config = config

    @abstractmethod
    def compose(self, row: OutboxMessage, keys: Keys) -> Any:
        """The stored row, decrypted, as what ``send`` takes."""

    @abstractmethod
    def send(self, message: Any) -> Receipt | None:
        """Hand the message over, or raise DeliveryError."""

    @contextmanager
    def session(self) -> Iterator[Deliverer]:
        """What a delivery pass sends through; backends with connections keep one open
        for the whole pass (see SMTPMailer)."""
        yield self

    def problems(self) -> list[str]:
        """What stops this deliverer from working, for `outofoffice check`."""
        return []

    def describe(self) -> str:
        return self.name

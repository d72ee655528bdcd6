"""The mailer interface: one subclass per backend, chosen by name in config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outofoffice.channels.base import Deliverer, DeliveryError
from outofoffice.mail.message import Message

if TYPE_CHECKING:
    from outofoffice.keys import Keys
    from outofoffice.models import OutboxMessage


class MailError(DeliveryError):
    """A failed send. ``permanent`` ones are not retried (dead letter at once)."""


class Mailer(Deliverer):
    channel = "email"

    @property
    def sender(self) -> str:
        return self.config.mail.from_

    def compose(self, row: OutboxMessage, keys: Keys) -> Message:
        headers = dict(row.headers or {})
        reply_to = headers.pop("Reply-To", "")
        return Message(
            sender=self.sender,
            to=row.recipient,
            subject=row.subject,
            text=keys.decrypt(row.body_text),
            html=keys.decrypt(row.body_html),
            message_id=row.message_id,
            reply_to=reply_to,
            headers=headers,
            tags={"kind": row.kind},
        )

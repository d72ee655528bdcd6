"""What every SMS provider is: a Deliverer of the "sms" channel. The words of the
messages and what a reply does live in outofoffice/sms.py, the same for any provider."""

from __future__ import annotations

from dataclasses import dataclass

from outofoffice.channels.base import Deliverer


@dataclass(frozen=True)
class Sms:
    """One text message, decrypted, ready to hand over: the recipient in E.164 form
    and the text."""

    to: str
    body: str

    def __repr__(self) -> str:  # a traceback or a debug log shows neither number nor text
        return f"Sms(to=<{len(self.to)} characters>, body=<{len(self.body)} characters>)"


class SmsProvider(Deliverer):
    channel = "sms"

    def compose(self, row, keys) -> Sms:
        """The number is stored encrypted: for a caller's texts it is the caller's
        phone, which is never at rest in the clear."""
        return Sms(to=keys.decrypt(row.recipient), body=keys.decrypt(row.body_text))

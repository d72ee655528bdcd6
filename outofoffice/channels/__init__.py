"""Every way a message leaves but email (mail/): one deliverer per channel, chosen by
config. Email's backends stay in mail/; all of them are Deliverers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outofoffice.channels.base import Deliverer

if TYPE_CHECKING:
    from outofoffice.config import Config


def deliverers_for(config: Config) -> dict[str, Deliverer]:
    """SMS when [sms] names a provider, push when [push] names an ntfy server, and
    webhooks (each account adds its own endpoints)."""
    found: dict[str, Deliverer] = {}
    if config.sms.provider == "twilio":
        from outofoffice.channels.sms.twilio import TwilioSms

        found["sms"] = TwilioSms(config)
    if config.push.ntfy_url:
        from outofoffice.channels.push.ntfy import NtfyPush

        found["push"] = NtfyPush(config)
    from outofoffice.channels.webhook import WebhookDeliverer

    found["webhook"] = WebhookDeliverer(config)  # always: each account adds its own endpoints
    return found

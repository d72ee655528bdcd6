"""Sends through Resend's HTTP API (POST {api_url}/emails) with the standard library.

The outbox row's id is the Idempotency-Key, so a retry after a crash is not a second
email.
"""

import json
import urllib.error
import urllib.request

from outofoffice import __version__
from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.message import Message


def _provider_message(body: str) -> str:
    """Resend explains errors as JSON {"message": ...}; anything else is shown as is."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return str(parsed.get("message", body)) if isinstance(parsed, dict) else body


class ResendMailer(Mailer):
    name = "resend"

    def send(self, message: Message) -> None:
        opts = self.config.mail.resend
        payload = {
            "from": message.sender,
            "to": [message.to],
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": {"Message-ID": message.message_id, **message.all_headers()},
            "tags": [{"name": k, "value": v} for k, v in message.tags.items()],
        }
        if message.reply_to:
            payload["reply_to"] = message.reply_to
        request = urllib.request.Request(  # noqa: S310 - api_url is validated as http(s)
            f"{opts.api_url.rstrip('/')}/emails",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {opts.api_key}",
                "Content-Type": "application/json",
                "Idempotency-Key": message.message_id.strip("<>"),
                "User-Agent": f"outofoffice/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            detail = _provider_message(exc.read(2000).decode("utf-8", "replace"))
            if exc.code == 429:
                retry = exc.headers.get("Retry-After", "")
                raise MailError(
                    f"Resend 429: {detail}",
                    retry_after=float(retry) if retry.replace(".", "", 1).isdigit() else None,
                ) from None
            raise MailError(f"Resend {exc.code}: {detail}", permanent=exc.code < 500) from None
        except (urllib.error.URLError, OSError) as exc:
            raise MailError(f"cannot reach {opts.api_url}: {exc}") from None

    def describe(self) -> str:
        return f"resend ({self.config.mail.resend.api_url})"

"""Sends SMS through Twilio's Messages resource with the standard library, and checks
the signature Twilio puts on the webhooks it sends us.

POST {api_url}/2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded, HTTP
Basic with the account SID and auth token. Twilio answers 201 with the message's JSON
(its "sid" names it in the delivery reports), or an error as JSON
{"code", "message", "more_info", "status"}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

from outofoffice import __version__
from outofoffice.channels import http
from outofoffice.channels.base import DeliveryError, Receipt
from outofoffice.channels.sms.base import Sms, SmsProvider
from outofoffice.config import is_loopback

INBOUND_PATH = "/sms/twilio/inbound"
STATUS_PATH = "/sms/twilio/status"


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature as Twilio documents it: base64 of HMAC-SHA1, keyed with the
    auth token, over the full URL Twilio called followed by each POST parameter's name
    and value, sorted by name (no separators)."""
    signed = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_valid(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str
) -> bool:
    """Compared in constant time; no token or no signature is never valid."""
    if not auth_token or not given:
        return False
    return hmac.compare_digest(signature(auth_token, url, params).encode(), given.encode())


# A run of 7 or more digits, with the +, spaces, dashes, dots and parentheses phones
# are written with: Twilio's messages name the number (21211, 21408, 21612, ...).
PHONE_LIKE = re.compile(r"\+?\(?\d(?:[\s().-]*\d){6,}\)?")


def without_numbers(text: str) -> str:
    """ "The 'To' number +1 555 0101 is not valid" -> "The 'To' number <number> is not
    valid": the reason is kept in outbox.last_error, the dispatch history, the export
    and the log, where a caller's number must never be in the clear (SPEC section 3)."""
    return PHONE_LIKE.sub("<number>", text)


def _error_words(status: int, body: str) -> str:
    """ "Twilio 400 21211: The 'To' number <number> is not a valid phone number." """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("code" in parsed or "message" in parsed):
        code = "".join(c for c in str(parsed.get("code") or "") if c.isalnum())[:16]
        message = without_numbers(str(parsed.get("message", "")).strip())[:300]
        return f"Twilio {status} {code}: {message}" if code else f"Twilio {status}: {message}"
    return f"Twilio {status}: {without_numbers(body.strip()[:200]) or 'no explanation'}"


class TwilioSms(SmsProvider):
    name = "twilio"

    @property
    def options(self):
        return self.config.sms.twilio

    @property
    def messages_url(self) -> str:
        sid = urllib.parse.quote(self.options.account_sid, safe="")
        return f"{self.options.api_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"

    def form(self, message: Sms) -> dict[str, str]:
        """The fields of the request: one sender (the number, or the messaging service
        that picks one), and where Twilio reports whether it was delivered."""
        opts = self.options
        fields = {"To": message.to, "Body": message.body}
        if opts.from_number:
            fields["From"] = opts.from_number
        else:
            fields["MessagingServiceSid"] = opts.messaging_service_sid
        fields["StatusCallback"] = self.config.base_url.rstrip("/") + STATUS_PATH
        return fields

    def send(self, message: Sms) -> Receipt:
        opts = self.options
        credentials = base64.b64encode(f"{opts.account_sid}:{opts.auth_token}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - api_url is validated as http(s)
            self.messages_url,
            data=urllib.parse.urlencode(self.form(message)).encode(),
            method="POST",
            headers={
                "Authorization": f"Basic {credentials}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": f"outofoffice/{__version__}",
            },
        )
        status, answer = http.post(
            request, who=f"Twilio at {opts.api_url}", error_words=_error_words
        )
        sid = str(answer.get("sid", ""))
        if not sid:  # taken, by all appearances, but without an id its reports are lost
            raise DeliveryError(f"Twilio {status}: the answer names no message sid", status=status)
        return Receipt(provider_id=sid, status=status)

    def problems(self) -> list[str]:
        """What config alone shows is wrong; whether Twilio answers is for
        `outofoffice check --send-test-sms`."""
        opts = self.options
        found = []
        if not opts.account_sid:
            found.append("[sms.twilio] account_sid is empty")
        if not opts.auth_token:
            found.append("[sms.twilio] auth_token is empty (or set auth_token_file)")
        if not (opts.from_number or opts.messaging_service_sid):
            found.append("[sms.twilio] from_number or messaging_service_sid is needed")
        host = urlsplit(self.config.base_url).hostname or ""
        if is_loopback(host):
            found.append(
                f"[server] base_url ({self.config.base_url}) is on this machine: Twilio "
                f"cannot reach {INBOUND_PATH} (vendors' replies) or {STATUS_PATH} "
                "(delivery reports)"
            )
        return found

    def describe(self) -> str:
        opts = self.options
        sender = opts.from_number or f"messaging service {opts.messaging_service_sid}"
        return f"twilio ({opts.api_url}, from {sender})"

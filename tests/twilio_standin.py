"""A local stand-in for Twilio's REST API, speaking its documented contract, and the
webhooks Twilio would send us, signed as Twilio signs them.

POST /2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded, HTTP Basic with
the account SID and auth token: 201 and the message's JSON (sid "SM" + 32 hex, status
"queued"); errors as JSON {"code", "message", "more_info", "status"}. The signature is
written here again from Twilio's documentation, not imported from the product, so a
mistake in one is not repeated in the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from email.utils import formatdate
from urllib.parse import parse_qs

from tests.standin import JsonHandler, StandIn

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "twilio-test-auth-token-0123456789"
FROM_NUMBER = "+15550100100"
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
MESSAGES = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json")


def config_sections(standin: TwilioStandIn) -> dict:
    """The config of an installation that texts through this stand-in, as the
    make_instance fixture and served_config take it."""
    return {
        "sms": {"provider": "twilio"},
        "sms__twilio": {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM_NUMBER,
            "api_url": standin.url,
        },
    }


def error_body(status: int, code: int, message: str) -> dict:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class TwilioStandIn(StandIn):
    """Start with ``.start()``; ``messages`` holds what was taken (the form, with the
    sid given and the Authorization seen); ``answer_next(...)`` plans refusals."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN):
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict] = []
        self.requests = 0
        self.planned: list[tuple[int, dict, dict]] = []
        self.lock = threading.Lock()

    def answer_next(self, kind: str, times: int = 1, retry_after: int = 2) -> None:
        """The next ``times`` requests get: "429" (Retry-After), "500", or "21211"
        (400, the To number is not valid: Twilio's message names the number)."""
        if kind == "429":
            plan = (
                429,
                error_body(429, 20429, "Too Many Requests"),
                {"Retry-After": str(retry_after)},
            )
        elif kind == "500":
            plan = (500, error_body(500, 20500, "Internal Server Error"), {})
        elif kind == "21211":
            plan = (
                400,
                error_body(400, 21211, "The 'To' number {To} is not a valid phone number."),
                {},
            )
        else:
            raise ValueError(kind)
        with self.lock:
            self.planned.extend([plan] * times)

    def handler(self) -> type[JsonHandler]:
        standin = self

        class Handler(JsonHandler):
            content_type = "application/json; charset=utf-8"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                with standin.lock:
                    standin.requests += 1
                path = MESSAGES.fullmatch(self.path)
                if path is None:
                    return self._answer(
                        404, error_body(404, 20404, "The requested resource was not found")
                    )
                expected = base64.b64encode(
                    f"{standin.account_sid}:{standin.auth_token}".encode()
                ).decode()
                auth = self.headers.get("Authorization", "")
                if auth != f"Basic {expected}" or path.group(1) != standin.account_sid:
                    return self._answer(401, error_body(401, 20003, "Authenticate"))
                if self.headers.get("Content-Type", "").split(";")[0] != (
                    "application/x-www-form-urlencoded"
                ):
                    return self._answer(400, error_body(400, 20001, "Invalid content type"))
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                with standin.lock:
                    plan = standin.planned.pop(0) if standin.planned else None
                if plan:
                    status, body, headers = plan
                    message = body["message"].replace("{To}", form.get("To", ""))
                    return self._answer(status, body | {"message": message}, headers)
                if not form.get("To"):
                    return self._answer(
                        400, error_body(400, 21604, "A 'To' phone number is required.")
                    )
                if not E164.fullmatch(form["To"]):
                    return self._answer(
                        400,
                        error_body(
                            400, 21211, f"The 'To' number {form['To']} is not a valid phone number."
                        ),
                    )
                if not form.get("Body"):
                    return self._answer(400, error_body(400, 21602, "Message body is required."))
                if not (form.get("From") or form.get("MessagingServiceSid")):
                    return self._answer(
                        400, error_body(400, 21603, "A 'From' phone number is required.")
                    )
                sid = "SM" + secrets.token_hex(16)
                now = formatdate(usegmt=True)
                with standin.lock:
                    standin.messages.append(form | {"sid": sid, "Authorization": auth})
                return self._answer(
                    201,
                    {
                        "account_sid": standin.account_sid,
                        "api_version": "2010-04-01",
                        "body": form["Body"],
                        "date_created": now,
                        "date_sent": None,
                        "date_updated": now,
                        "direction": "outbound-api",
                        "error_code": None,
                        "error_message": None,
                        "from": form.get("From"),
                        "messaging_service_sid": form.get("MessagingServiceSid"),
                        "num_media": "0",
                        "num_segments": "1",
                        "price": None,
                        "price_unit": "USD",
                        "sid": sid,
                        "status": "queued",
                        "to": form["To"],
                        "uri": f"/2010-04-01/Accounts/{standin.account_sid}/Messages/{sid}.json",
                    },
                )

        return Handler


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """From Twilio's "Secure webhooks": take the full URL, append each POST parameter's
    name then value, in alphabetical order of the names, with no delimiters; sign with
    HMAC-SHA1 keyed by the auth token; base64-encode."""
    data = url
    for name in sorted(params):
        data += name + params[name]
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def inbound_params(from_number: str, body: str, to: str = FROM_NUMBER) -> dict[str, str]:
    """What Twilio posts for an incoming SMS."""
    sid = "SM" + secrets.token_hex(16)
    return {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": from_number,
        "ApiVersion": "2010-04-01",
    }


def status_params(sid: str, status: str, error_code: str = "", to: str = "") -> dict[str, str]:
    """What Twilio posts to a StatusCallback."""
    params = {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": FROM_NUMBER,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params


def post_signed(
    app,
    public_url: str,
    params: dict[str, str],
    auth_token: str = AUTH_TOKEN,
    signature: str | None = None,
    status: int | str = "*",
):
    """POST the form to our app as Twilio would: to the path of ``public_url`` (the
    URL configured in Twilio), signed over that URL; ``signature`` overrides (a wrong
    one, or "" for none)."""
    path = "/" + public_url.split("/", 3)[3]
    if signature is None:
        signature = twilio_signature(auth_token, public_url, params)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    headers["User-Agent"] = "TwilioProxy/1.1"
    return app.post(path, params, headers=headers, status=status)

"""Twilio's webhooks: a vendor's text (answered with TwiML) and delivery reports.

Both are refused with 403, and change nothing, unless X-Twilio-Signature verifies
against the configured auth token and the public URL Twilio was given. The form is
read from the raw body, so the signature is checked over exactly what Twilio sent.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import bottle

from outofoffice import sms
from outofoffice.channels.sms.twilio import INBOUND_PATH, STATUS_PATH, signature_valid
from outofoffice.policy import REQUEST_BODY_MAX
from outofoffice.web.context import instance

log = logging.getLogger(__name__)

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response>{}</Response>'


def twiml(answer: str) -> str:
    """An answer Twilio texts back to the sender; none for an empty one."""
    return TWIML.format(f"<Message>{escape(answer)}</Message>" if answer else "")


def _refused(why: str) -> bottle.HTTPResponse:
    log.warning("%s: refused: %s", bottle.request.path, why)
    return bottle.HTTPResponse(
        "Forbidden\n", status=403, headers={"Content-Type": "text/plain; charset=utf-8"}
    )


def _signed_form(path: str) -> dict[str, str] | bottle.HTTPResponse:
    """The POST parameters, when Twilio signed them for this URL; else the 403."""
    inst = instance()
    if inst.config.sms.provider != "twilio":
        return _refused("SMS is off ([sms] provider)")
    raw = bottle.request.body.read(REQUEST_BODY_MAX + 1)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return _refused("the form is not UTF-8")
    given = bottle.request.get_header("X-Twilio-Signature", "")
    token = inst.config.sms.twilio.auth_token
    if not signature_valid(token, inst.url(path), pairs, given):
        return _refused("missing or wrong X-Twilio-Signature")
    form = dict(pairs)
    account = inst.config.sms.twilio.account_sid
    if form.get("AccountSid") and form["AccountSid"] != account:
        return _refused("another Twilio account")
    return form


def install(app: bottle.Bottle) -> None:
    @app.post(INBOUND_PATH)
    def inbound():
        form = _signed_form(INBOUND_PATH)
        if isinstance(form, bottle.HTTPResponse):
            return form
        answer = sms.handle_inbound(
            instance(),
            form.get("MessageSid") or form.get("SmsSid", ""),
            form.get("From", ""),
            form.get("Body", ""),
        )
        bottle.response.content_type = "text/xml; charset=utf-8"
        return twiml(answer)

    @app.post(STATUS_PATH)
    def status():
        form = _signed_form(STATUS_PATH)
        if isinstance(form, bottle.HTTPResponse):
            return form
        sms.record_delivery_report(
            instance(),
            form.get("MessageSid") or form.get("SmsSid", ""),
            form.get("MessageStatus") or form.get("SmsStatus", ""),
            form.get("ErrorCode", ""),
        )
        bottle.response.status = 204
        return ""

"""Publishes push notifications to an ntfy server (https://ntfy.sh or one's own) with
the standard library.

POST {ntfy_url}/ with a JSON body naming the topic (ntfy's "publish as JSON"), with
"Authorization: Bearer <token>" for a protected server. ntfy answers 200 with the
message as JSON (its "id" among it), or an error as JSON {"code", "http", "error",
"link"}: 401/403 for a wrong or missing token, 429 when a rate limit is reached.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from outofoffice import __version__
from outofoffice.channels import http
from outofoffice.channels.base import Deliverer, Receipt

PRIORITIES = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5}
TAGS = {"urgent": ["rotating_light"], "high": ["bell"]}  # emoji on the notification
RATE_LIMIT_WAIT = 30.0  # ntfy says 429 without a Retry-After: wait this long
TOKEN_HINT = {401: "check [push] ntfy_token", 403: "the token may not write to this topic"}


def _error_words(status: int, body: str) -> str:
    """ "ntfy 401 (40101): unauthorized" """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "error" in parsed:
        code = parsed.get("code")
        words = f"ntfy {status}{f' ({code})' if code else ''}: {str(parsed['error']).strip()}"
    else:
        words = f"ntfy {status}: {body.strip()[:200] or 'no explanation'}"
    return f"{words}; {TOKEN_HINT[status]}" if status in TOKEN_HINT else words


class NtfyPush(Deliverer):
    channel = "push"
    name = "ntfy"

    @property
    def url(self) -> str:
        return self.config.push.ntfy_url.rstrip("/") + "/"

    def compose(self, row, keys) -> dict[str, Any]:
        """The outbox row's payload (push.offer_payload) as ntfy's JSON publish body:
        Accept and Decline become http action buttons that clear the notification."""
        payload = json.loads(keys.decrypt(row.body_text))
        priority = str(payload.get("priority") or "default")
        message: dict[str, Any] = {
            "topic": row.recipient,
            "title": payload.get("title", ""),
            "message": payload.get("message", ""),
            "priority": PRIORITIES.get(priority, 3),
            "tags": TAGS.get(priority, []),
        }
        if payload.get("click"):
            message["click"] = payload["click"]
        if actions := payload.get("actions"):
            message["actions"] = [
                {
                    "action": "http",
                    "label": action["label"],
                    "url": action["url"],
                    "method": action.get("method", "POST"),
                    "clear": True,
                }
                for action in actions[:3]  # ntfy shows at most three
            ]
        return message

    def send(self, message: dict[str, Any]) -> Receipt:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"outofoffice/{__version__}",
        }
        if token := self.config.push.ntfy_token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(  # noqa: S310 - ntfy_url is validated as http(s)
            self.url, data=json.dumps(message).encode(), method="POST", headers=headers
        )
        status, answer = http.post(
            request,
            who=f"ntfy at {self.url}",
            error_words=_error_words,
            rate_limit_wait=RATE_LIMIT_WAIT,
        )
        message_id = str(answer.get("id", ""))
        return Receipt(provider_id=message_id, status=status)

    def describe(self) -> str:
        protected = ", with an access token" if self.config.push.ntfy_token else ""
        return f"ntfy ({self.config.push.ntfy_url}{protected})"

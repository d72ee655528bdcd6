"""Posts webhook deliveries, signed as the Standard Webhooks specification says.

Signed at send time (the receiver checks the timestamp is recent); the webhook-id is
the row's, the same on every try. The endpoint's host is resolved again before each
send and every address checked, then the checked address itself is connected to (the
name still goes in Host and in TLS' server name and certificate check), so a DNS
answer that changes between the check and the connection cannot lead inside.
Redirects are not followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outofoffice import __version__, webhooks
from outofoffice.channels.base import Deliverer, DeliveryError, Receipt
from outofoffice.models import WebhookEndpoint

if TYPE_CHECKING:
    from outofoffice.keys import Keys
    from outofoffice.models import OutboxMessage

log = logging.getLogger(__name__)

TIMEOUT = 10
READ_AT_MOST = 4096
DEFAULT_RETRY_AFTER = 60


@dataclass(frozen=True)
class WebhookRequest:
    endpoint_id: int
    url: str
    message_id: str
    body: str
    secret: str


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The webhook-signature value: "v1," and base64 of HMAC-SHA256 over
    "id.timestamp.body" keyed with the secret's bytes (base64 after "whsec_")."""
    key = base64.b64decode(secret.removeprefix(webhooks.SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a checked address; Host still names the endpoint's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As _PinnedHTTP, with TLS whose server name and certificate are the host's."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        try:
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _retry_after(value: str | None) -> float:
    value = (value or "").strip()
    if value.isdigit():
        return float(min(int(value), 3600))
    return float(DEFAULT_RETRY_AFTER)


class WebhookDeliverer(Deliverer):
    channel = "webhook"
    name = "webhook"
    one_provider = False  # each endpoint is somewhere of its own

    def compose(self, row: OutboxMessage, keys: Keys) -> WebhookRequest:
        endpoint = WebhookEndpoint.get_or_none(
            WebhookEndpoint.id == row.endpoint_id, WebhookEndpoint.account == row.account_id
        )
        if endpoint is None:
            raise DeliveryError("the endpoint was deleted", permanent=True)
        if not endpoint.active:
            raise DeliveryError(
                "the endpoint is switched off (it answered 410 Gone)", permanent=True
            )
        return WebhookRequest(
            endpoint_id=endpoint.id,
            url=endpoint.url,
            message_id=row.message_id,
            body=keys.decrypt(row.body_text),
            secret=keys.decrypt(endpoint.secret),
        )

    def send(self, message: WebhookRequest) -> Receipt:
        try:
            target, addresses = webhooks.check_url(self.config, message.url)
        except webhooks.UrlProblem as exc:
            raise DeliveryError(str(exc), permanent=not exc.unresolved) from None
        timestamp = int(time.time())
        headers = {
            "webhook-id": message.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(
                message.secret, message.message_id, timestamp, message.body
            ),
            "Content-Type": "application/json",
            "User-Agent": f"outofoffice/{__version__} (webhooks)",
        }
        status, retry_after = self._post(target, addresses, headers, message.body.encode())
        if 200 <= status < 300:
            return Receipt(status=status)
        if status == 410:
            webhooks.deactivate(message.endpoint_id)
            raise DeliveryError(
                "the endpoint answered 410 Gone: it is switched off", permanent=True, status=410
            )
        if status == 429:
            raise DeliveryError(
                "the endpoint answered 429 (too many requests)",
                retry_after=_retry_after(retry_after),
                status=429,
            )
        if 300 <= status < 400:
            raise DeliveryError(
                f"the endpoint answered {status}, a redirect, which is not followed: "
                "give its final address",
                status=status,
            )
        raise DeliveryError(f"the endpoint answered {status}", status=status)

    def _post(
        self, target: webhooks.Target, addresses: list[str], headers: dict, body: bytes
    ) -> tuple[int, str | None]:
        """The status and Retry-After of the first address that takes a connection."""
        kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        failure = "no address"
        for address in addresses:
            connection = kind(target.host, target.port, address, TIMEOUT)
            try:
                connection.connect()
            except ssl.SSLError as exc:
                connection.close()
                raise DeliveryError(
                    f"cannot reach {target.host} securely: {exc.reason or type(exc).__name__}"
                ) from None
            except OSError as exc:
                connection.close()
                failure = str(exc) or type(exc).__name__
                continue
            try:
                connection.request("POST", target.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read(READ_AT_MOST)
                return response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                raise DeliveryError(
                    f"{target.host} did not answer: {str(exc) or type(exc).__name__}"
                ) from None
            finally:
                connection.close()
        raise DeliveryError(f"cannot reach {target.host}: {failure}")

    def describe(self) -> str:
        return "webhook (each account's endpoints)"

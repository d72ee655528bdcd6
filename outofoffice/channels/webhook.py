"""Posts webhook deliveries, signed as the Standard Webhooks specification says.

Signed at send time (the receiver checks the timestamp is recent); the webhook-id is
the row's, the same on every try. The endpoint's host is resolved again before each
send and every address checked, then the checked address itself is connected to (the
name still goes in Host and in TLS' server name and certificate check), so a DNS
answer that changes between the check and the connection cannot lead inside.
Redirects are not followed.

A send has one deadline for all of it (connect, TLS, request, answer): each socket
operation waits no longer than the time left, and a timer shuts the socket down when
the time is up, so an endpoint that drips its answer a byte at a time cannot hold the
channel. At most two of the host's addresses are tried.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from outofoffice import __version__, webhooks
from outofoffice.channels.base import Deliverer, DeliveryError, Receipt
from outofoffice.models import WebhookEndpoint

if TYPE_CHECKING:
    from outofoffice.keys import Keys
    from outofoffice.models import OutboxMessage

log = logging.getLogger(__name__)

DEADLINE = 15.0  # seconds for one send in all: connect, TLS, request and answer
CONNECT_TIMEOUT = 10.0  # to one address, within the deadline
MAX_ADDRESSES = 2  # of a host's addresses, tried in turn
READ_AT_MOST = 4096
DEFAULT_RETRY_AFTER = 60


@dataclass(frozen=True)
class WebhookRequest:
    endpoint_id: int
    url: str
    message_id: str
    body: str = field(repr=False)  # the caller's details
    secret: str = field(repr=False)


class _TimeUp(Exception):
    pass


class _Deadline:
    """One send's time limit. Sockets opened through it wait at most the time left at
    each step; when the time is up a timer shuts them down, which ends a read or write
    in progress however slowly the far end sends. The timer works on duplicates of the
    sockets' descriptors, owned here, so closing a connection never races with it."""

    def __init__(self, seconds: float):
        self.ends = time.monotonic() + seconds
        self.passed = False
        self._done = False
        self._lock = threading.Lock()
        self._duplicates: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            for duplicate in self._duplicates:
                duplicate.close()

    def left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0 or self.passed:
            raise _TimeUp
        return left

    def connect(self, address: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            with self._lock:
                self._duplicates.append(sock.dup())
            sock.settimeout(min(CONNECT_TIMEOUT, self.left()))
            sock.connect((address, port))
            sock.settimeout(self.left())
        except BaseException:
            sock.close()
            raise
        return sock

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.passed = True
            for duplicate in self._duplicates:
                with contextlib.suppress(OSError):  # not connected (yet, or any more)
                    duplicate.shutdown(socket.SHUT_RDWR)


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The webhook-signature value: "v1," and base64 of HMAC-SHA256 over
    "id.timestamp.body" keyed with the secret's bytes (base64 after "whsec_")."""
    key = base64.b64decode(secret.removeprefix(webhooks.SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a checked address; Host still names the endpoint's host."""

    def __init__(self, host: str, port: int, address: str, deadline: _Deadline):
        super().__init__(host, port, timeout=deadline.left())
        self.address = address
        self.deadline = deadline

    def connect(self) -> None:
        self.sock = self.deadline.connect(self.address, self.port)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As _PinnedHTTP, with TLS whose server name and certificate are the host's."""

    def __init__(self, host: str, port: int, address: str, deadline: _Deadline):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=deadline.left(), context=self.tls)
        self.address = address
        self.deadline = deadline

    def connect(self) -> None:
        raw = self.deadline.connect(self.address, self.port)
        try:
            self.deadline.left()
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _kind(exc: BaseException) -> str:
    """The exception's qualified type name (binascii.Error, ssl.SSLEOFError)."""
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _retry_after(value: str | None) -> float:
    value = (value or "").strip()
    if value.isdigit():
        return float(min(int(value), 3600))
    return float(DEFAULT_RETRY_AFTER)


class WebhookDeliverer(Deliverer):
    channel = "webhook"
    name = "webhook"
    one_provider = False  # each endpoint is somewhere of its own
    parallel = 4  # an endpoint near its deadline holds back no other
    deadline = DEADLINE  # seconds a send may take in all

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
        try:
            secret = keys.decrypt(endpoint.secret)
        except Exception as exc:  # under a key no longer held: it never will be read
            raise DeliveryError(
                f"the endpoint's secret cannot be read ({type(exc).__name__}): delete the "
                "endpoint and add it again",
                permanent=True,
            ) from None
        return WebhookRequest(
            endpoint_id=endpoint.id,
            url=endpoint.url,
            message_id=row.message_id,
            body=keys.decrypt(row.body_text),
            secret=secret,
        )

    def send(self, message: WebhookRequest) -> Receipt:
        """Post it, or raise DeliveryError: any failure of this one endpoint is one, and
        an unforeseen one names its kind only (its text might quote the secret)."""
        try:
            return self._send(message)
        except DeliveryError:
            raise
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise DeliveryError(f"the delivery failed unexpectedly ({_kind(exc)})") from None

    def _send(self, message: WebhookRequest) -> Receipt:
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
        status, retry_after = self.post(target, addresses, headers, message.body.encode())
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

    def post(
        self, target: webhooks.Target, addresses: list[str], headers: dict, body: bytes
    ) -> tuple[int, str | None]:
        """The status and Retry-After of the first of (at most MAX_ADDRESSES) checked
        addresses that takes a connection, all within the deadline."""
        late = DeliveryError(f"the endpoint took longer than {self.deadline:g} s")
        with _Deadline(self.deadline) as deadline:
            try:
                return self._post(deadline, target, addresses, headers, body)
            except _TimeUp:
                raise late from None
            except DeliveryError:
                if deadline.passed:
                    raise late from None
                raise

    def _post(
        self,
        deadline: _Deadline,
        target: webhooks.Target,
        addresses: list[str],
        headers: dict,
        body: bytes,
    ) -> tuple[int, str | None]:
        kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        failure = "no address"
        for address in addresses[:MAX_ADDRESSES]:
            connection = kind(target.host, target.port, address, deadline)
            try:
                connection.connect()
            except ssl.SSLError as exc:
                connection.close()
                raise DeliveryError(
                    f"cannot reach {target.host} securely: {exc.reason or type(exc).__name__}"
                ) from None
            except OSError as exc:
                connection.close()
                failure = exc.strerror or type(exc).__name__
                continue
            try:
                connection.request("POST", target.path, body=body, headers=headers)
                response = connection.getresponse()
                if deadline.passed:  # cut off: what was read may be a part only
                    raise _TimeUp
                # The status is the answer; what follows it is not needed.
                with contextlib.suppress(OSError, http.client.HTTPException):
                    response.read(READ_AT_MOST)
                return response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                raise DeliveryError(
                    f"{target.host} did not answer ({type(exc).__name__})"
                ) from None
            finally:
                connection.close()
        deadline.left()  # the time ran out on the last address: say so
        raise DeliveryError(f"cannot reach {target.host}: {failure}")

    def describe(self) -> str:
        return "webhook (each account's endpoints)"

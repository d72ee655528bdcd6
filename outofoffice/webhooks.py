"""Webhooks per account, following the Standard Webhooks specification (SPEC section 11).

An owner adds endpoint URLs and picks events; each dispatch change queues one outbox row
per subscribed endpoint in the change's own transaction, and channels/webhook.py signs
and posts it. An endpoint is a URL the product will call from the server, so the URL
rules below (https, a public address, never this instance) are checked when it is added
and again, on freshly resolved addresses, at every send.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from outofoffice import clock, db, outbox
from outofoffice.errors import ValidationError
from outofoffice.models import Account, Dispatch, OutboxMessage, WebhookEndpoint

if TYPE_CHECKING:
    from outofoffice.config import Config
    from outofoffice.instance import Instance

EVENTS = (
    "dispatch.created",
    "dispatch.accepted",
    "dispatch.declined",
    "dispatch.escalated",
    "dispatch.unassigned",
    "dispatch.resolved",
    "dispatch.closed",
)
EVENT_WORDS = {
    "dispatch.created": "a request comes in",
    "dispatch.accepted": "a vendor accepts",
    "dispatch.declined": "a vendor declines",
    "dispatch.escalated": "it passes to the next vendor",
    "dispatch.unassigned": "no vendor is left to ask",
    "dispatch.resolved": "a vendor marks it resolved",
    "dispatch.closed": "you close it",
}
TEST_EVENT = "webhook.test"  # the dashboard's test button; to one endpoint, never subscribed
MAX_ENDPOINTS = 10
URL_MAX = 2000
SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SECRET_BYTES = 32  # the spec asks for 24 to 64
KIND = "webhook"  # OutboxMessage.kind of every delivery
RECENT = 10  # deliveries shown per endpoint

# Carrier-grade NAT is neither private nor global in ipaddress' words: named here.
SHARED = ipaddress.ip_network("100.64.0.0/10")
# What http.client may send as it is in a path or query: RFC 3986's unreserved and
# sub-delims, ":" and "@", and "%" so escapes already there stay as they are. Anything
# else (non-ASCII letters, spaces cannot get this far) is percent-encoded as UTF-8.
PATH_SAFE = "/%:@!$&'()*+,;=-._~"
QUERY_SAFE = PATH_SAFE + "?"


class UrlProblem(Exception):
    """Why a URL may not be called, in words for the owner (or the admin's log).
    ``unresolved``: its host name did not resolve, which may pass (DNS down)."""

    def __init__(self, message: str, unresolved: bool = False):
        super().__init__(message)
        self.unresolved = unresolved


@dataclass(frozen=True)
class Target:
    """A checked endpoint URL: where to connect and what to ask for."""

    scheme: str
    host: str  # lowercased, without brackets or trailing dot
    port: int
    path: str  # path and query, "/" at least


def own_hosts(config: Config) -> tuple[str, str]:
    """This instance's host (base_url's) and the parent domain of its routing pages."""
    base = (urlsplit(config.base_url).hostname or "").rstrip(".").lower()
    return base, (config.server.domain or "").rstrip(".").lower()


def parse_url(config: Config, url: str) -> Target:
    """The URL as a Target, or UrlProblem saying what to fix. No DNS here."""
    allow_private = config.webhooks.allow_private
    if not url:
        raise UrlProblem(
            "Enter the address your endpoint listens on, such as https://example.com/hooks."
        )
    if len(url) > URL_MAX:
        raise UrlProblem(f"Shorten the address to at most {URL_MAX} characters.")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UrlProblem("Take the spaces out of the address.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlProblem(
            "This is not a web address: check the host name, and that the port is a "
            "number from 1 to 65535."
        ) from None
    if port is not None and not 1 <= port <= 65535:
        raise UrlProblem("Use a port from 1 to 65535, or leave it out for the usual one.")
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        raise UrlProblem(
            "Use an https:// address."
            if not allow_private
            else "Use an https:// or http:// address."
        )
    if "@" in parts.netloc:
        raise UrlProblem(
            "Leave the user name and password out of the address: check the signature instead."
        )
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlProblem("Put the host name after https://, such as https://example.com/hooks.")
    try:
        host = host.encode("idna").decode("ascii")  # bücher.example as DNS spells it
    except UnicodeError:
        raise UrlProblem("Check the host name: it cannot be looked up as written.") from None
    base, domain = own_hosts(config)
    scheme = parts.scheme.lower()
    port = port or (443 if scheme == "https" else 80)
    if _is_own(config, host, port, base, domain):
        raise UrlProblem(OWN)
    path = quote(parts.path or "/", safe=PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=QUERY_SAFE)
    return Target(scheme=scheme, host=host, port=port, path=path)


OWN = "That address is this service itself: use your own server's address."


def _is_own(config: Config, host: str, port: int, base: str, domain: str) -> bool:
    """The instance's host by name, or the routing domain and its subdomains. A
    loopback base_url (a test or a machine of one's own) is told apart by its port, so
    an endpoint on another port of the same machine may be added when allowed."""
    if domain and (host == domain or host.endswith("." + domain)):
        return True
    if host != base:
        return False
    if _loopback(base):
        base_parts = urlsplit(config.base_url)
        base_port = base_parts.port or (443 if base_parts.scheme == "https" else 80)
        return port == base_port
    return True


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address as one value whichever way it is written (scope and IPv4-mapped)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_problem(address: str, allow_private: bool) -> str:
    """Why the product may not connect to this IP address ("" when it may)."""
    ip = _ip(address)
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if allow_private:
        return ""
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv6Address):
        # 6to4 and Teredo carry IPv4 addresses a relay forwards to: judged by those.
        for kind, inner in (("6to4", [ip.sixtofour]), ("Teredo", list(ip.teredo or ()))):
            for embedded in filter(None, inner):
                problem = address_problem(str(embedded), allow_private)
                if problem:
                    return f"a {kind} address leading to {problem}"
        if ip.is_site_local:
            return "a site-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in SHARED:
        return "a carrier-grade NAT address"
    if ip.is_private:
        return "a private network address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return ""


def resolve(target: Target, allow_private: bool) -> list[str]:
    """The host's addresses, every one of them allowed; UrlProblem otherwise. Any one
    not allowed refuses the whole host: a name that also points inside is not public."""
    try:
        found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UrlProblem(
            f"We could not find the host {target.host}: check its spelling.", unresolved=True
        ) from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not addresses:
        raise UrlProblem(f"We could not find the host {target.host}.", unresolved=True)
    for address in addresses:
        problem = address_problem(address, allow_private)
        if problem:
            hint = "" if allow_private else ": use a public https:// address"
            raise UrlProblem(f"{target.host} leads to {problem}, which is not allowed{hint}.")
    return addresses


def _addresses_of(host: str) -> set:
    """The host's addresses; none when it does not resolve (then names alone decide)."""
    if not host:
        return set()
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()
    return {_ip(info[4][0]) for info in found}


def is_own_address(config: Config, target: Target, addresses: list[str]) -> bool:
    """Whether the endpoint's addresses are this instance's own: base_url's host or the
    routing domain resolve to one of them. As with names, a loopback base_url is only
    itself on its own port."""
    base, domain = own_hosts(config)
    base_parts = urlsplit(config.base_url)
    base_port = base_parts.port or (443 if base_parts.scheme == "https" else 80)
    own = _addresses_of(base) | _addresses_of(domain)
    for ip in own & {_ip(a) for a in addresses}:
        if not ip.is_loopback or target.port == base_port:
            return True
    return False


def check_url(config: Config, url: str) -> tuple[Target, list[str]]:
    """A URL the product may call, with its checked addresses; UrlProblem otherwise."""
    target = parse_url(config, url)
    addresses = resolve(target, config.webhooks.allow_private)
    if is_own_address(config, target, addresses):
        raise UrlProblem(OWN)
    return target, addresses


# --- endpoints ------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def clean_events(events: list[str]) -> list[str]:
    chosen = [e for e in EVENTS if e in set(events)]
    if not chosen:
        raise ValidationError({"events": "Pick at least one event to send."})
    if set(events) - set(EVENTS):
        raise ValidationError({"events": "Pick events from the list."})
    return chosen


def add_endpoint(
    instance: Instance, account: Account, url: str, events: list[str]
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret, which is returned this once and stored
    encrypted. ValidationError (url, events) says what to fix."""
    url = (url or "").strip()
    errors = {}
    try:
        check_url(instance.config, url)
    except UrlProblem as exc:
        errors["url"] = str(exc)
    try:
        chosen = clean_events(events)
    except ValidationError as exc:
        errors |= exc.errors
    if errors:
        raise ValidationError(errors)
    secret = new_secret()
    with db.write():
        db.lock(("webhook-endpoints", account.id))
        if endpoints(account, active_only=False, count=True) >= MAX_ENDPOINTS:
            raise ValidationError(
                {"url": f"An account may have {MAX_ENDPOINTS} endpoints: delete one first."}
            )
        endpoint = WebhookEndpoint.create(
            account=account,
            url=url,
            secret=instance.keys.encrypt(secret),
            events=chosen,
            active=True,
            created_at=clock.now(),
        )
    return endpoint, secret


def endpoints(account: Account, active_only: bool = False, count: bool = False):
    """The account's endpoints, oldest first (or how many)."""
    query = WebhookEndpoint.select().where(WebhookEndpoint.account == account.id)
    if active_only:
        query = query.where(WebhookEndpoint.active == True)  # noqa: E712 - peewee
    return query.count() if count else list(query.order_by(WebhookEndpoint.id))


def get_endpoint(account: Account, endpoint_id: int) -> WebhookEndpoint | None:
    """The account's own endpoint by id; None for another account's."""
    return WebhookEndpoint.get_or_none(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account == account.id
    )


def delete_endpoint(account: Account, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its deliveries, queued ones included: nothing more is sent."""
    with db.write():
        OutboxMessage.delete().where(
            OutboxMessage.endpoint_id == endpoint.id,
            OutboxMessage.channel == "webhook",
            OutboxMessage.account == account.id,
        ).execute()
        WebhookEndpoint.delete().where(
            WebhookEndpoint.id == endpoint.id, WebhookEndpoint.account == account.id
        ).execute()


def deactivate(endpoint_id: int) -> None:
    """The endpoint answered 410 Gone: it asks to hear nothing more (the spec)."""
    with db.write():
        WebhookEndpoint.update(active=False).where(WebhookEndpoint.id == endpoint_id).execute()


def secret_of(instance: Instance, endpoint: WebhookEndpoint) -> str:
    return instance.keys.decrypt(endpoint.secret)


# --- events ---------------------------------------------------------------------------


def iso(at: datetime) -> str:
    """A stored (naive UTC) time as ISO 8601 UTC."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def payload(instance: Instance, d: Dispatch, event_type: str, at: datetime) -> dict:
    """What a vendor may see of the dispatch (SPEC section 3), its status, its vendor's
    name and the times; nothing else of the caller or the firm."""
    keys = instance.keys
    account = d.account
    subject = d.subject_label
    if d.subject_id and d.subject.address:
        subject = f"{d.subject.name}, {d.subject.address}"
    vendor = d.vendor if d.vendor_id else None
    return {
        "type": event_type,
        "timestamp": iso(at),
        "data": {
            "reference": d.reference,
            "status": d.status,
            "subject": subject,
            "category": d.category_label,
            "emergency": bool(d.category_id and d.category.emergency),
            "caller": {"name": keys.decrypt(d.caller_name), "phone": keys.decrypt(d.caller_phone)},
            "description": keys.decrypt(d.description),
            "firm": {
                "name": account.business_name,
                "phone": account.contact_phone,
                "email": account.email,
            },
            "vendor": {"name": vendor.name} if vendor else None,
            "created_at": iso(d.created_at),
            "event_at": iso(at),
        },
    }


def new_message_id() -> str:
    """The webhook-id: the same on every try of one delivery, so receivers drop repeats."""
    return "msg_" + secrets.token_hex(16)


def _enqueue(instance: Instance, endpoint: WebhookEndpoint, body: dict, d: Dispatch | None):
    return outbox.enqueue_message(
        instance.keys,
        channel="webhook",
        to=(urlsplit(endpoint.url).hostname or "")[:254],
        title=body["type"],
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        kind=KIND,
        account=endpoint.account_id,
        dispatch=d,
        endpoint_id=endpoint.id,
        message_id=new_message_id(),
    )


ACTIVE_ENDPOINTS = (
    'SELECT * FROM "webhook_endpoint" WHERE "account_id" = ? AND "active" ORDER BY "id"'
)


def queue_event(
    instance: Instance, d: Dispatch, event_type: str, at: datetime | None = None
) -> list[OutboxMessage]:
    """Inside the transaction of a dispatch change: one delivery per active endpoint of
    the account that subscribed to ``event_type``. Call outbox.wake() after the commit."""
    if event_type not in EVENTS:
        raise ValueError(f"not a webhook event: {event_type!r}")
    active = WebhookEndpoint.raw(db.sql(ACTIVE_ENDPOINTS), d.account_id)  # every change runs it
    subscribed = [e for e in active if event_type in (e.events or [])]
    if not subscribed:
        return []
    body = payload(instance, d, event_type, at or clock.now())
    return [_enqueue(instance, endpoint, body, d) for endpoint in subscribed]


def queue_test(
    instance: Instance, account: Account, endpoint: WebhookEndpoint
) -> OutboxMessage | None:
    """A "webhook.test" delivery to this endpoint alone, for the dashboard's button;
    None when a test to it is still queued (a held-down button sends one)."""
    now = clock.now()
    body = {
        "type": TEST_EVENT,
        "timestamp": iso(now),
        "data": {
            "firm": {"name": account.business_name},
            "message": "A test from Out of Office Pro: your endpoint hears us.",
        },
    }
    with db.write():
        db.lock(("webhook-test", endpoint.id))
        waiting = OutboxMessage.select().where(
            OutboxMessage.endpoint_id == endpoint.id,
            OutboxMessage.channel == "webhook",
            OutboxMessage.account == account.id,
            OutboxMessage.subject == TEST_EVENT,
            OutboxMessage.status == "queued",
        )
        if waiting.exists():
            return None
        row = _enqueue(instance, endpoint, body, None)
    outbox.wake()
    return row


# --- deliveries -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryLine:
    event: str
    created_at: datetime
    attempts: int
    status_code: int | None
    error: str
    state: str  # in words: waiting, retrying, delivered, gave up


def state_words(row: OutboxMessage) -> str:
    if row.status == "sent":
        return "delivered"
    if row.status == "dead":
        return "gave up"
    return "will try again" if row.attempts else "waiting to be sent"


def deliveries(
    account: Account, endpoint: WebhookEndpoint, limit: int = RECENT
) -> list[DeliveryLine]:
    """The endpoint's latest deliveries, newest first."""
    rows = (
        OutboxMessage.select()
        .where(
            OutboxMessage.endpoint_id == endpoint.id,
            OutboxMessage.channel == "webhook",
            OutboxMessage.account == account.id,
        )
        .order_by(OutboxMessage.id.desc())
        .limit(limit)
    )
    return [
        DeliveryLine(
            event=row.subject,
            created_at=row.created_at,
            attempts=row.attempts,
            status_code=row.last_status,
            error=row.last_error,
            state=state_words(row),
        )
        for row in rows
    ]

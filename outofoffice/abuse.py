"""Rate limits, IP records and the blocklist.

An IP address is recorded for each dispatch and each sign-in request, for abuse
detection only; the sweep removes it after ip_days. The client is the socket peer
(REMOTE_ADDR), which waitress rewrites from X-Forwarded-For only for the configured
trusted proxy: a forged header from anyone else changes nothing.
"""

from __future__ import annotations

import re
from datetime import timedelta
from ipaddress import ip_address

from outofoffice import clock, db
from outofoffice.config import Config
from outofoffice.keys import Keys
from outofoffice.models import Account, IPBlock, IPRecord
from outofoffice.policy import FORM_TOKEN_HOURS

HOUR = timedelta(hours=1)


class Refused(Exception):
    """Too many requests, or a blocked address: the caller is told to phone instead."""


def check_ip(value: str) -> str:
    """A normalised IP address, or ValueError naming the problem."""
    try:
        return str(ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


# Every request runs these: fixed SQL text (see db.insert).
BLOCKED_SQL = (
    'SELECT 1 FROM "ip_block" WHERE "ip" = ? AND ("expires_at" IS NULL OR "expires_at" > ?)'
)
RECENT_SQL = {
    "ip": 'SELECT COUNT(*) FROM "ip_record" WHERE "kind" = ? AND "ip" = ? AND "at" > ?',
    "account": (
        'SELECT COUNT(*) FROM "ip_record" WHERE "kind" = ? AND "account_id" = ? AND "at" > ?'
    ),
}
# A caller's submission: the blocklist, the address's and the firm's last hour, at once.
DISPATCH_LIMITS_SQL = (
    'SELECT (SELECT COUNT(*) FROM "ip_block" WHERE "ip" = ?'
    ' AND ("expires_at" IS NULL OR "expires_at" > ?)),'
    ' (SELECT COUNT(*) FROM "ip_record" WHERE "kind" = \'dispatch\' AND "ip" = ? AND "at" > ?),'
    ' (SELECT COUNT(*) FROM "dispatch" WHERE "account_id" = ? AND "created_at" > ?)'
)


def _scalar(text: str, *params):
    return db.database.execute_sql(db.sql(text), params).fetchone()


def is_blocked(ip: str) -> bool:
    return _scalar(BLOCKED_SQL, ip, clock.now()) is not None


def _recent(kind: str, **where) -> int:
    ((column, value),) = where.items()
    return _scalar(RECENT_SQL[column], kind, value, clock.now() - HOUR)[0]


def record(ip: str, kind: str, account: Account | None = None) -> None:
    if ip:
        db.insert(IPRecord, ip=ip, kind=kind, account=account, at=clock.now())


def check_dispatch(config: Config, account: Account, ip: str) -> None:
    """Refused when the address is blocked or over its hourly limit, or the firm is
    over its own (a flood against one firm pages no one)."""
    limits = config.abuse
    now = clock.now()
    blocked, from_ip, to_firm = _scalar(
        DISPATCH_LIMITS_SQL, ip, now, ip, now - HOUR, account.id, now - HOUR
    )
    if ip and (blocked or from_ip >= limits.dispatches_per_ip_per_hour):
        raise Refused(ip)
    if to_firm >= limits.dispatches_per_account_per_hour:
        raise Refused(account.slug)


def may_send_sign_in(config: Config, ip: str, account: Account | None) -> bool:
    """Whether a sign-in email may go out now (per address and per IP, per hour). The
    request is recorded either way, so the work does not depend on the answer."""
    limits = config.abuse
    # count, then record: one at a time per address and per IP
    db.lock(*([("sign-in", account.id)] if account else []), *([("sign-in-ip", ip)] if ip else []))
    allowed = not (ip and is_blocked(ip))
    if ip and _recent("login_email", ip=ip) >= limits.login_emails_per_ip_per_hour:
        allowed = False
    if account is not None and (
        _recent("login_email", account=account.id) >= limits.login_emails_per_address_per_hour
    ):
        allowed = False
    record(ip, "login_email", account)
    return allowed


def form_token(keys: Keys, account_id: int) -> str:
    """A token for the routing page's form: a page loaded from this site carries it, so
    a form posted blind from another site, or a bot that never loads the page, is
    refused. It names the firm and the time it was issued, and lasts FORM_TOKEN_HOURS."""
    issued = int(clock.timestamp())
    return f"{issued}.{keys.sign('form-token', f'{account_id}.{issued}')}"


def form_token_ok(keys: Keys, account_id: int, token: str) -> bool:
    issued, _, signature = token.partition(".")
    if not re.fullmatch(r"[0-9]{1,12}", issued):  # ASCII only: str.isdigit takes "²"
        return False
    age = clock.timestamp() - int(issued)
    return -300 < age < FORM_TOKEN_HOURS * 3600 and keys.verify(
        "form-token", f"{account_id}.{issued}", signature
    )


def block(ip: str, days: int | None, reason: str = "") -> None:
    ip = check_ip(ip)
    expires = clock.now() + timedelta(days=days) if days else None
    with db.write():
        IPBlock.insert(
            ip=ip, reason=reason, created_at=clock.now(), expires_at=expires
        ).on_conflict(
            conflict_target=[IPBlock.ip],
            update={IPBlock.expires_at: expires, IPBlock.reason: reason},
        ).execute()


def unblock(ip: str) -> bool:
    with db.write():
        return IPBlock.delete().where(IPBlock.ip == check_ip(ip)).execute() > 0


def blocks() -> list[IPBlock]:
    return list(IPBlock.select().order_by(IPBlock.created_at))

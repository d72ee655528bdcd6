"""The outbox: emails are rows written in the caller's transaction, delivered later.

A web request never talks to a mail server. Delivery is at least once: a row is
marked sent only after the mailer accepted it, so a crash in between means a second
try with the same Message-ID (and Idempotency-Key), never a lost email.
"""

from __future__ import annotations

import logging
import random
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import parseaddr

from peewee import fn

from outofoffice import clock, db, heartbeat
from outofoffice.keys import Keys
from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.message import Message, header_safe, is_address
from outofoffice.models import Account, OutboxEmail, Setting

log = logging.getLogger(__name__)

LIFETIME = timedelta(hours=24)
BATCH = 10  # rows per pass: small, so a fresh vendor email never waits behind a long pass
FIRST_RETRY_SECONDS = 5
MAX_RETRY_SECONDS = 300

# Called after each queued row is committed, to wake the delivery job at once.
_wake_listeners: list[Callable[[], None]] = []


def on_enqueue(listener: Callable[[], None]) -> None:
    _wake_listeners.append(listener)


def remove_listener(listener: Callable[[], None]) -> None:
    if listener in _wake_listeners:
        _wake_listeners.remove(listener)


def wake() -> None:
    """After a commit that queued mail: this process's scheduler delivers it now, or,
    in a process without one, on PostgreSQL every other process's (waking them all for
    mail this one sends itself would make each run a claim for nothing). The others
    also poll."""
    listeners = list(_wake_listeners)
    for listener in listeners:
        listener()
    if listeners:
        return
    try:
        db.notify()
    except Exception as exc:  # committed already: the caller's answer must not fail now
        log.warning("could not wake the other processes (they poll): %s", type(exc).__name__)


def new_message_id(sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{uuid.uuid4().hex}@{domain}>"


def enqueue(
    keys: Keys,
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    kind: str,
    account=None,
    dispatch=None,
    vendor=None,
    reply_to: str = "",
    headers: dict[str, str] | None = None,
    lifetime: timedelta = LIFETIME,
) -> OutboxEmail:
    """Queue one email inside the caller's transaction; bodies are stored encrypted."""
    if not is_address(to):
        raise ValueError(f"not a single email address: {to!r}")
    now = clock.now()
    values = dict(
        account=account,
        dispatch=dispatch,
        vendor=vendor,
        kind=kind,
        recipient=header_safe(to),
        subject=header_safe(subject)[:255],
        body_text=keys.encrypt(text),
        body_html=keys.encrypt(html),
        headers={"Reply-To": reply_to, **(headers or {})} if reply_to else dict(headers or {}),
        message_id=new_message_id(sender),
        next_attempt_at=now,
        created_at=now,
        expires_at=now + lifetime,
    )
    row = OutboxEmail(**values)
    row.id = db.insert(OutboxEmail, **values)
    return row


# Sent: the bodies are not needed any more (this runs once per email, so its text is
# fixed). The mail server took it, so it is recorded whoever holds the row now; if
# another process sent it too (its claim had run out), the second record finds it sent.
MARK_SENT = (
    'UPDATE "outbox" SET "status" = \'sent\', "sent_at" = ?, "attempts" = ?,'
    " \"body_text\" = '', \"body_html\" = '', \"last_error\" = '',"
    ' "claimed_by" = NULL, "claimed_until" = NULL WHERE "id" = ? AND "status" = \'queued\''
)
# PostgreSQL. Leases run on the database's clock, so machines whose clocks disagree
# still agree on when a claim ran out.
DB_NOW = "(now() AT TIME ZONE 'UTC')"
LEASE_ENDS = f"{DB_NOW} + %s * interval '1 second'"
# Take due rows no other process holds (SKIP LOCKED: two processes never wait for, or
# take, the same row).
CLAIM_SQL = (
    f'UPDATE "outbox" SET "claimed_by" = %s, "claimed_until" = {LEASE_ENDS} WHERE "id" IN ('  # noqa: S608
    ' SELECT o."id" FROM "outbox" o LEFT JOIN "account" a ON a."id" = o."account_id"'
    ' WHERE o."status" = \'queued\' AND o."next_attempt_at" <= %s'
    f' AND (o."claimed_until" IS NULL OR o."claimed_until" <= {DB_NOW})'
    ' AND (o."account_id" IS NULL OR a."status" = \'active\')'
    ' ORDER BY (o."kind" <> \'vendor\'), o."next_attempt_at", o."id" LIMIT %s'
    " FOR UPDATE OF o SKIP LOCKED) RETURNING *"
)
# Just before each send: the claim is still ours, for a whole lease from now. A pass of
# ten slow sends never outlasts its claim, and a row another process took is not sent.
RENEW_SQL = (
    f'UPDATE "outbox" SET "claimed_until" = {LEASE_ENDS}'  # noqa: S608
    ' WHERE "id" = %s AND "claimed_by" = %s AND "status" = \'queued\''
)


def retry_delay(attempts: int) -> float:
    """About 5 s, 15 s, 45 s ... capped at 5 minutes, with jitter so retries spread."""
    base = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 3 ** max(0, attempts - 1))
    return base * random.uniform(0.8, 1.2)


def message_for(row: OutboxEmail, keys: Keys, sender: str) -> Message:
    headers = dict(row.headers or {})
    reply_to = headers.pop("Reply-To", "")
    return Message(
        sender=sender,
        to=row.recipient,
        subject=row.subject,
        text=keys.decrypt(row.body_text),
        html=keys.decrypt(row.body_html),
        message_id=row.message_id,
        reply_to=reply_to,
        headers=headers,
        tags={"kind": row.kind},
    )


def _deliverable():
    """Rows that may go out: none of a disabled or deleted firm's mail (no caller's
    details leave after the owner closed the account)."""
    active = Account.select(Account.id).where(Account.status == "active")
    return OutboxEmail.account.is_null() | OutboxEmail.account.in_(active)


def backlog() -> int:
    return OutboxEmail.select().where(OutboxEmail.status == "queued", _deliverable()).count()


# The installation's mail state, shared by every process: when the mailer began failing
# with nothing getting through since (a UTC ISO time), absent while mail goes through.
FAILING_SINCE = "mail-failing-since"


def failing_since() -> datetime | None:
    """Since when no message got through (the circuit breaker opened), or None."""
    row = Setting.get_or_none(Setting.name == FAILING_SINCE)
    return datetime.fromisoformat(row.value) if row else None


def oldest_due() -> datetime | None:
    """When the longest-waiting message that is due now became due, or None."""
    return (
        OutboxEmail.select(fn.MIN(OutboxEmail.next_attempt_at))
        .where(
            OutboxEmail.status == "queued",
            OutboxEmail.next_attempt_at <= clock.now(),
            _deliverable(),
        )
        .scalar()
    )


class Hooks:
    """What the rest of the product does when an email goes out or fails; called inside
    the transaction that records it, so a dispatch's events and its outbox agree."""

    def sent(self, row: OutboxEmail) -> None:
        return None

    def failed(self, row: OutboxEmail, reason: str, dead: bool) -> None:
        return None


def new_claim() -> str:
    """Who holds a claim: this process (as its heartbeat names it), and this pass."""
    host, pid = heartbeat.identity()
    return f"{host[:40]}:{pid}:{secrets.token_hex(4)}"


def _due(limit: int, lease: timedelta) -> tuple[list[OutboxEmail], str | None]:
    """The rows to send now. On SQLite one process delivers (the scheduler's lock
    file), so it only looks; on PostgreSQL it claims them for the lease."""
    now = clock.now()
    if db.is_sqlite():
        query = (
            OutboxEmail.select()
            .where(
                OutboxEmail.status == "queued", OutboxEmail.next_attempt_at <= now, _deliverable()
            )
            # the vendor who must act goes first; owners' notices and digests can wait
            .order_by((OutboxEmail.kind != "vendor"), OutboxEmail.next_attempt_at, OutboxEmail.id)
            .limit(limit)
        )
        return list(query), None
    claim = new_claim()
    with db.write():
        rows = list(OutboxEmail.raw(CLAIM_SQL, claim, lease.total_seconds(), now, limit))
    rows.sort(key=lambda r: (r.kind != "vendor", r.next_attempt_at, r.id))
    return rows, claim


def deliver_due(
    mailer: Mailer,
    keys: Keys,
    sender: str,
    hooks: Hooks | None = None,
    limit: int = BATCH,
    lease: timedelta = timedelta(seconds=120),
) -> dict[str, int]:
    """Send what is due; returns counts of sent, retried and dead-lettered rows."""
    hooks = hooks or Hooks()
    counts = {"sent": 0, "retry": 0, "dead": 0}
    due, claim = _due(limit, lease)
    with mailer.session() as session:
        for row in due:
            if outcome := send_claimed(row, claim, lease, session, keys, sender, hooks):
                counts[outcome] += 1
    return counts


def send_claimed(
    row: OutboxEmail,
    claim: str | None,
    lease: timedelta,
    mailer: Mailer,
    keys: Keys,
    sender: str,
    hooks: Hooks,
) -> str | None:
    """Send one row this pass claimed, if the claim still holds; the outcome, or None
    when another process holds the row now."""
    if claim is not None and not _renew(row, claim, lease):
        _lost(row)
        return None
    return _deliver_one(row, claim, mailer, keys, sender, hooks)


def _renew(row: OutboxEmail, claim: str, lease: timedelta) -> bool:
    """One statement on its own (no transaction around it): once per email, under load."""
    cursor = db.database.execute_sql(RENEW_SQL, (lease.total_seconds(), row.id, claim))
    return cursor.rowcount == 1


def _lost(row: OutboxEmail) -> None:
    log.warning("outbox: email #%d is another process's now; it records it", row.id)


def _deliver_one(
    row: OutboxEmail, claim: str | None, mailer: Mailer, keys: Keys, sender: str, hooks: Hooks
) -> str | None:
    try:
        mailer.send(message_for(row, keys, sender))
    except MailError as exc:
        return _record_failure(row, claim, exc, hooks)
    now = clock.now()
    with db.write():
        cursor = db.database.execute_sql(db.sql(MARK_SENT), (now, row.attempts + 1, row.id))
        if cursor.rowcount != 1:
            _lost(row)
            return None
        row.status, row.sent_at = "sent", now
        hooks.sent(row)
    log.debug("outbox: sent %s email #%d", row.kind, row.id)
    return "sent"


def _record_failure(
    row: OutboxEmail, claim: str | None, exc: MailError, hooks: Hooks
) -> str | None:
    now = clock.now()
    attempts = row.attempts + 1
    delay = exc.retry_after if exc.retry_after is not None else retry_delay(attempts)
    dead = exc.permanent or now + timedelta(seconds=delay) >= row.expires_at
    reason = str(exc)[:1000]
    # on PostgreSQL only the claim's holder records a failure; on SQLite the one
    # delivering process holds every row
    held = [OutboxEmail.id == row.id, OutboxEmail.status == "queued"]
    if claim is not None:
        held.append(OutboxEmail.claimed_by == claim)
    with db.write():
        changed = (
            OutboxEmail.update(
                status="dead" if dead else "queued",
                attempts=attempts,
                last_error=reason,
                next_attempt_at=now + timedelta(seconds=delay),
                claimed_by=None,
                claimed_until=None,
            )
            .where(*held)
            .execute()
        )
        if changed != 1:
            _lost(row)
            return None
        hooks.failed(row, reason, dead)
    log.warning(
        "outbox: %s email #%d failed (try %d)%s: %s",
        row.kind,
        row.id,
        attempts,
        ", dead-lettered" if dead else "",
        reason,
    )
    return "dead" if dead else "retry"


def retry(row_ids: list[int] | None = None) -> int:
    """Queue dead-lettered (or given) rows again, due now, with a fresh lifetime."""
    now = clock.now()
    query = OutboxEmail.update(
        status="queued",
        next_attempt_at=now,
        expires_at=now + LIFETIME,
        last_error="",
    )
    if row_ids is None:
        query = query.where(OutboxEmail.status == "dead")
    else:
        query = query.where(OutboxEmail.id.in_(row_ids), OutboxEmail.status != "sent")
    with db.write():
        count = query.execute()
    wake()
    return count

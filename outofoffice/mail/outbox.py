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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

import peewee
from peewee import fn

from outofoffice import clock, db, heartbeat
from outofoffice.keys import Keys
from outofoffice.mail.base import Mailer, MailError
from outofoffice.mail.breaker import Breaker
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
    emergency: bool = False,
) -> OutboxEmail:
    """Queue one email inside the caller's transaction; bodies are stored encrypted.
    ``emergency``: a vendor's email about an emergency goes first."""
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
        priority=0 if emergency else 1 if kind == "vendor" else 2,
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
# take, the same row). "was_claimed_by" is the claim before this one: a row that still
# carries one was claimed and its outcome never recorded.
CLAIM_SQL = (
    'WITH "due" AS (SELECT o."id", o."claimed_by" AS "was_claimed_by" FROM "outbox" o'  # noqa: S608
    ' LEFT JOIN "account" a ON a."id" = o."account_id"'
    ' WHERE o."status" = \'queued\' AND o."next_attempt_at" <= %s'
    f' AND (o."claimed_until" IS NULL OR o."claimed_until" <= {DB_NOW})'
    ' AND (o."account_id" IS NULL OR a."status" = \'active\')'
    ' ORDER BY o."priority", o."next_attempt_at", o."id" LIMIT %s'
    " FOR UPDATE OF o SKIP LOCKED)"
    f' UPDATE "outbox" SET "claimed_by" = %s, "claimed_until" = {LEASE_ENDS}'
    ' FROM "due" WHERE "outbox"."id" = "due"."id" RETURNING "outbox".*, "due"."was_claimed_by"'
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


@dataclass
class Delivery:
    """What one process keeps between its delivery passes: the mailer's circuit
    breaker; emails the relay took whose record the database refused (a full disk, a
    held lock), recorded at the next pass and never sent again by this process; and
    claims on rows a stopped pass never tried, released at the next pass rather than
    waiting out their lease."""

    breaker: Breaker = field(default_factory=Breaker)
    sent: dict[int, OutboxEmail] = field(default_factory=dict)
    unclaimed: list[tuple[str, list[int]]] = field(default_factory=list)


def new_claim() -> str:
    """Who holds a claim: this process (as its heartbeat names it), and this pass."""
    host, pid = heartbeat.identity()
    return f"{host[:40]}:{pid}:{secrets.token_hex(4)}"


def _due_query(now: datetime, limit: int):
    """Due rows nobody holds, the vendor of an emergency first, then other vendors;
    owners' notices and digests can wait."""
    return (
        OutboxEmail.select()
        .where(
            OutboxEmail.status == "queued",
            OutboxEmail.next_attempt_at <= now,
            OutboxEmail.claimed_until.is_null() | (OutboxEmail.claimed_until <= now),
            _deliverable(),
        )
        .order_by(OutboxEmail.priority, OutboxEmail.next_attempt_at, OutboxEmail.id)
        .limit(limit)
    )


def _due(limit: int, lease: timedelta) -> tuple[list[OutboxEmail], str]:
    """Claim the rows to send now for the lease, committed before anything is sent: a
    send whose outcome cannot be written (a full disk, a held lock) leaves its row
    claimed, so it is not sent again before the lease ends. On SQLite one process
    delivers (the scheduler's lock file) and the lease runs on its clock; on PostgreSQL
    on the database's."""
    claim = new_claim()
    now = clock.now()
    if db.is_sqlite():
        if not _due_query(now, 1).exists():  # the usual poll: no write lock for nothing
            return [], claim
        with db.write():
            rows = list(_due_query(now, limit))
            for row in rows:
                row.was_claimed_by = row.claimed_by
            held = OutboxEmail.id.in_([r.id for r in rows])
            OutboxEmail.update(claimed_by=claim, claimed_until=now + lease).where(held).execute()
        return rows, claim
    with db.write():
        rows = list(OutboxEmail.raw(CLAIM_SQL, now, limit, claim, lease.total_seconds()))
    rows.sort(key=lambda r: (r.priority, r.next_attempt_at, r.id))
    return rows, claim


def let_go_of_earlier_claims() -> int:
    """SQLite, when this process has just taken the scheduler's lock file: no other
    process delivers, so whatever claims are left belong to one that stopped (killed,
    crashed) and need not wait out their lease. Its last sends may repeat, with the
    same Message-ID, as after any crash; the claim stays named, so that is logged."""
    with db.write():
        return (
            OutboxEmail.update(claimed_until=None)
            .where(OutboxEmail.status == "queued", OutboxEmail.claimed_until.is_null(False))
            .execute()
        )


def deliver_due(
    mailer: Mailer,
    keys: Keys,
    sender: str,
    hooks: Hooks | None = None,
    limit: int = BATCH,
    lease: timedelta = timedelta(seconds=120),
    state: Delivery | None = None,
) -> dict[str, int]:
    """Send what is due; counts of sent, retried and dead-lettered rows, and of rows
    made due at once because the relay answers again ("released").

    The database may refuse a write (a full disk, a lock held too long): then the pass
    stops, since every further send would be one more whose outcome is lost. An email
    sent meanwhile is remembered and recorded as sent once the database takes writes
    again (its row stays claimed, so no process sends it before); nothing more is sent
    until then."""
    hooks = hooks or Hooks()
    state = state or Delivery()
    breaker = state.breaker
    counts = {"sent": 0, "retry": 0, "dead": 0, "released": 0}
    if not _record_remembered(state, hooks):
        return counts
    state.unclaimed = [(claim, ids) for claim, ids in state.unclaimed if not _release(ids, claim)]
    allowed = breaker.allowance(limit)
    if allowed == 0:  # the relay is down and no probe is due
        return counts
    try:
        due, claim = _due(allowed, lease)
    except Exception as exc:  # the database refuses: nothing claimed, nothing sent
        log.error("outbox: cannot claim due email, nothing sent this pass: %s", cause(exc))
        return counts
    if again := [r.id for r in due if getattr(r, "was_claimed_by", None)]:
        log.warning(
            "outbox: emails %s were claimed by a pass that never recorded their outcome (a "
            "stopped process, or the database refused the write): they go now with the "
            "same Message-ID; one that pass had sent already reaches its recipient twice",
            ", ".join(f"#{n}" for n in again),
        )
    with mailer.session() as session:
        while due and not (breaker.is_open and counts["retry"]):  # opened: one probe
            row = due.pop(0)
            try:
                outcome = send_claimed(row, claim, lease, session, keys, sender, hooks, breaker)
            except Unrecorded as refused:
                if refused.sent:
                    state.sent[row.id] = row
                break
            if outcome:
                counts[outcome] += 1
    if due and not _release([r.id for r in due], claim):
        state.unclaimed.append((claim, [r.id for r in due]))
    _tell(breaker)
    if breaker.recovered:  # the probe got through: a whole batch now, not at the next poll
        breaker.recovered = False
        counts["released"] = _release_backlog()
        more = deliver_due(mailer, keys, sender, hooks, limit, lease, state)
        counts = {kind: counts[kind] + more[kind] for kind in counts}
    return counts


def _tell(breaker: Breaker) -> None:
    """Tell every process (and /healthz) whether mail goes through: since when it has
    failed, kept from the first process that saw it; or that it goes through again."""
    news = breaker.news()
    if news is None:
        return
    try:
        with db.write():
            if news == "failing":  # since the first process saw it, not since the latest
                since = breaker.failing_since or clock.now()
                Setting.insert(
                    name=FAILING_SINCE, value=since.isoformat()
                ).on_conflict_ignore().execute()
            else:
                Setting.delete().where(Setting.name == FAILING_SINCE).execute()
    except Exception as exc:  # told at the next pass instead; delivery goes on
        log.warning("outbox: could not record whether mail goes through: %s", cause(exc))
        return
    breaker.told = news
    if news == "failing":
        log.warning(
            "outbox: %d emails in a row failed, the mail relay seems down: trying one "
            "email every %d s until it answers",
            breaker.failures,
            breaker.probe_every.total_seconds(),
        )
    elif breaker.recovered:
        log.info("outbox: the mail relay answers again; sending the backlog now")


def _release(ids: list[int], claim: str) -> bool:
    """Let go of claimed rows this pass did not try, so they need not wait a lease;
    False when the database refused (the next pass tries again)."""
    try:
        with db.write():
            OutboxEmail.update(claimed_by=None, claimed_until=None).where(
                OutboxEmail.id.in_(ids), OutboxEmail.claimed_by == claim
            ).execute()
    except Exception as exc:
        log.warning("outbox: could not release %d untried emails: %s", len(ids), cause(exc))
        return False
    return True


def _release_backlog() -> int:
    """The relay answers again: every email waiting out a backoff is due now, rather
    than each after its own (up to five minutes)."""
    now = clock.now()
    try:
        with db.write():
            return (
                OutboxEmail.update(next_attempt_at=now)
                .where(
                    OutboxEmail.status == "queued",
                    OutboxEmail.attempts > 0,
                    OutboxEmail.next_attempt_at > now,
                )
                .execute()
            )
    except Exception as exc:  # they go at their own times
        log.warning("outbox: could not make the backlog due at once: %s", cause(exc))
        return 0


def _record_remembered(state: Delivery, hooks: Hooks) -> bool:
    """Record the sends the database refused before; False while it still refuses."""
    for row_id, row in list(state.sent.items()):
        try:
            _write_sent(row, hooks)
        except Exception as exc:
            if db.is_away(exc):  # refused, or the connection is gone: at the next pass
                log.debug("outbox: email #%d still unrecorded: %s", row_id, cause(exc))
                return False
            log.error(  # a fault of this row alone, not of the database
                "outbox: the send of email #%d cannot be recorded (%s): it goes again "
                "after its lease, with the same Message-ID",
                row_id,
                cause(exc),
            )
        else:
            log.info("outbox: recorded email #%d as sent, now that the database takes it", row_id)
        del state.sent[row_id]
    return True


class Unrecorded(Exception):
    """The database refused to record an outcome; the pass stops. ``sent``: the relay
    had taken the email."""

    def __init__(self, sent: bool):
        super().__init__("sent" if sent else "failed")
        self.sent = sent


def cause(exc: BaseException) -> str:
    """An error in words an admin can act on, without data from the rows (a database
    error's text may quote values; SQLite's and our own name only the cause)."""
    if isinstance(exc, peewee.OperationalError):  # db.Unavailable among them
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return type(exc).__name__


def send_claimed(
    row: OutboxEmail,
    claim: str,
    lease: timedelta,
    mailer: Mailer,
    keys: Keys,
    sender: str,
    hooks: Hooks,
    breaker: Breaker | None = None,
) -> str | None:
    """Send one row this pass claimed, if the claim still holds; the outcome, or None
    when another process holds the row now. Raises Unrecorded when the outcome could
    not be written."""
    if not db.is_sqlite() and not _renewed(row, claim, lease):
        _lost(row)
        return None
    breaker = breaker or Breaker()
    try:
        message = message_for(row, keys, sender)
    except Exception as exc:  # altered, or under a key no longer held: it never will be
        unreadable = MailError(
            f"the stored message cannot be read ({type(exc).__name__})", permanent=True
        )
        return _failure_recorded(row, claim, unreadable, hooks)
    try:
        mailer.send(message)
    except MailError as exc:
        if exc.permanent or exc.retry_after is not None:
            breaker.answered()  # the relay answers: a refusal, or "not so fast"
        else:
            breaker.failed()
        return _failure_recorded(row, claim, exc, hooks)
    breaker.answered()
    row.sent_at = clock.now()
    try:
        return _write_sent(row, hooks)
    except Exception as exc:
        log.error(
            "outbox: %s email #%d was sent but that could not be recorded (%s): it is "
            "recorded once the database takes writes again, and nothing more is sent "
            "until then",
            row.kind,
            row.id,
            cause(exc),
        )
        raise Unrecorded(sent=True) from exc


def _renewed(row: OutboxEmail, claim: str, lease: timedelta) -> bool:
    """One statement on its own (no transaction around it): once per email, under load."""
    try:
        cursor = db.database.execute_sql(RENEW_SQL, (lease.total_seconds(), row.id, claim))
    except Exception as exc:  # the database went away: nothing sent, the pass stops
        log.warning("outbox: cannot renew the claim on email #%d: %s", row.id, cause(exc))
        raise Unrecorded(sent=False) from exc
    return cursor.rowcount == 1


def _lost(row: OutboxEmail) -> None:
    log.warning("outbox: email #%d is another process's now; it records it", row.id)


def _failure_recorded(row: OutboxEmail, claim: str, exc: MailError, hooks: Hooks) -> str | None:
    try:
        return _record_failure(row, claim, exc, hooks)
    except Exception as refused:
        log.error(
            "outbox: the failed try of %s email #%d could not be recorded (%s): it goes "
            "again after the lease",
            row.kind,
            row.id,
            cause(refused),
        )
        raise Unrecorded(sent=False) from refused


def _write_sent(row: OutboxEmail, hooks: Hooks) -> str | None:
    """Record a send with what follows from it; when only what follows fails (its
    history line: the vendor was deleted meanwhile, say), the row is marked sent on its
    own, so an email the relay took is never sent again. Raises while the database
    refuses writes."""
    try:
        return _record_sent(row, hooks, with_hooks=True)
    except Exception as exc:
        if db.is_away(exc):
            raise
        log.error(
            "outbox: %s email #%d went out, but what follows from it could not be recorded (%s)",
            row.kind,
            row.id,
            cause(exc),
        )
    return _record_sent(row, hooks, with_hooks=False)


def _record_sent(row: OutboxEmail, hooks: Hooks, with_hooks: bool) -> str | None:
    """At the time the relay took it, which may be a while before the database let it
    be written down."""
    with db.write():
        cursor = db.database.execute_sql(db.sql(MARK_SENT), (row.sent_at, row.attempts + 1, row.id))
        if cursor.rowcount != 1:
            _lost(row)
            return None
        row.status = "sent"
        if with_hooks:
            hooks.sent(row)
    log.debug("outbox: sent %s email #%d", row.kind, row.id)
    return "sent"


def _record_failure(row: OutboxEmail, claim: str, exc: MailError, hooks: Hooks) -> str | None:
    now = clock.now()
    attempts = row.attempts + 1
    delay = exc.retry_after if exc.retry_after is not None else retry_delay(attempts)
    dead = exc.permanent or now + timedelta(seconds=delay) >= row.expires_at
    reason = str(exc)[:1000]
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
            .where(
                OutboxEmail.id == row.id,
                OutboxEmail.status == "queued",
                OutboxEmail.claimed_by == claim,  # only the claim's holder records a failure
            )
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

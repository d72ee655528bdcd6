"""The outbox: every message, whatever its channel, is a row written in the caller's
transaction and delivered later.

A web request never talks to a mail server, Twilio, ntfy or a webhook endpoint.
Delivery is at least once: a row is marked sent only after its deliverer handed it
over, so a crash in between means a second try with the same id (Message-ID,
Idempotency-Key, webhook-id), never a lost message. Each channel has its own pass and
circuit breaker: Twilio being down holds back no email.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr

import peewee
from peewee import fn

from outofoffice import clock, db, heartbeat
from outofoffice.breaker import Breaker
from outofoffice.channels.base import CHANNELS, Deliverer, DeliveryError, Receipt
from outofoffice.keys import Keys
from outofoffice.mail.message import header_safe, is_address
from outofoffice.models import Account, OutboxMessage, Setting
from outofoffice.senders import Senders

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
) -> OutboxMessage:
    """Queue one email inside the caller's transaction; bodies are stored encrypted.
    ``emergency``: a vendor's email about an emergency goes first."""
    if not is_address(to):
        raise ValueError(f"not a single email address: {to!r}")
    return _insert(
        keys,
        channel="email",
        account=account,
        dispatch=dispatch,
        vendor=vendor,
        kind=kind,
        recipient=header_safe(to),
        subject=header_safe(subject)[:255],
        body_text=text,
        body_html=html,
        headers={"Reply-To": reply_to, **(headers or {})} if reply_to else dict(headers or {}),
        message_id=new_message_id(sender),
        lifetime=lifetime,
        priority=priority_of(kind, emergency),
    )


def priority_of(kind: str, emergency: bool) -> int:
    """What goes first when a backlog is sent: the vendor of an emergency, other
    vendors, then callers' and owners' messages, sign-in emails and digests."""
    return 0 if emergency else 1 if kind == "vendor" else 2


def enqueue_message(
    keys: Keys,
    *,
    channel: str,
    to: str,
    body: str,
    kind: str,
    title: str = "",
    account=None,
    dispatch=None,
    vendor=None,
    endpoint_id: int | None = None,
    message_id: str = "",
    lifetime: timedelta = LIFETIME,
    emergency: bool = False,
) -> OutboxMessage:
    """Queue an SMS, a push notification or a webhook delivery inside the caller's
    transaction. ``body`` (the text, or the JSON to post) is stored encrypted; ``to``
    is the phone number, the topic or the endpoint's host; ``message_id`` the id the
    far end may use to drop a repeat."""
    if channel not in CHANNELS or channel == "email":
        raise ValueError(f"not a channel for enqueue_message: {channel!r}")
    return _insert(
        keys,
        channel=channel,
        account=account,
        dispatch=dispatch,
        vendor=vendor,
        endpoint_id=endpoint_id,
        kind=kind,
        recipient=to[:254],
        subject=title[:255],
        body_text=body,
        body_html="",
        headers={},
        message_id=message_id or f"{channel}_{uuid.uuid4().hex}",
        lifetime=lifetime,
        priority=priority_of(kind, emergency),
    )


def _insert(keys: Keys, *, lifetime: timedelta, body_text: str, body_html: str, **values):
    now = clock.now()
    values |= dict(
        body_text=keys.encrypt(body_text),
        body_html=keys.encrypt(body_html) if body_html else "",
        next_attempt_at=now,
        created_at=now,
        expires_at=now + lifetime,
    )
    row = OutboxMessage(**values)
    row.id = db.insert(OutboxMessage, **values)
    return row


# Sent: the bodies are not needed any more (this runs once per email, so its text is
# fixed). The mail server took it, so it is recorded whoever holds the row now; if
# another process sent it too (its claim had run out), the second record finds it sent.
MARK_SENT = (
    'UPDATE "outbox" SET "status" = \'sent\', "sent_at" = ?, "attempts" = ?,'
    " \"body_text\" = '', \"body_html\" = '', \"last_error\" = '',"
    ' "provider_id" = ?, "last_status" = ?,'
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
    ' WHERE o."status" = \'queued\' AND o."channel" = %s AND o."next_attempt_at" <= %s'
    f' AND (o."claimed_until" IS NULL OR o."claimed_until" <= {DB_NOW})'
    ' AND (o."account_id" IS NULL OR a."status" = \'active\')'
    ' ORDER BY o."priority", o."next_attempt_at", o."id" LIMIT %s'
    " FOR UPDATE OF o SKIP LOCKED)"
    f' UPDATE "outbox" SET "claimed_by" = %s, "claimed_until" = {LEASE_ENDS}'
    ' FROM "due" WHERE "outbox"."id" = "due"."id" RETURNING "outbox".*, "due"."was_claimed_by"'
)
# SQLite's due rows (one process delivers there): nobody holds them, none of a firm
# that is not active (_deliverable), the vendor of an emergency first, then other
# vendors, owners' notices last; a fixed text, since a busy outbox runs a pass per commit
DUE_SQL = (
    'SELECT {columns} FROM "outbox" o LEFT JOIN "account" a ON a."id" = o."account_id"'
    ' WHERE o."status" = \'queued\' AND o."channel" = ? AND o."next_attempt_at" <= ?'
    ' AND (o."claimed_until" IS NULL OR o."claimed_until" <= ?)'
    ' AND (o."account_id" IS NULL OR a."status" = \'active\')'
    ' ORDER BY o."priority", o."next_attempt_at", o."id" LIMIT ?'
)
CLAIM_ROWS_SQL = 'UPDATE "outbox" SET "claimed_by" = ?, "claimed_until" = ? WHERE "id" IN ({marks})'
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


def _deliverable():
    """Rows that may go out: none of a disabled or deleted firm's mail (no caller's
    details leave after the owner closed the account)."""
    active = Account.select(Account.id).where(Account.status == "active")
    return OutboxMessage.account.is_null() | OutboxMessage.account.in_(active)


def backlog() -> int:
    return OutboxMessage.select().where(OutboxMessage.status == "queued", _deliverable()).count()


# The installation's state of each channel, shared by every process: when its
# deliverer began failing with nothing getting through since (a UTC ISO time), absent
# while messages go through.
FAILING_SINCE = "mail-failing-since"


def failing_setting(channel: str) -> str:
    return FAILING_SINCE if channel == "email" else f"{channel}-failing-since"


def failing_since(channel: str = "email") -> datetime | None:
    """Since when no message of the channel got through (its breaker opened), or None."""
    row = Setting.get_or_none(Setting.name == failing_setting(channel))
    return datetime.fromisoformat(row.value) if row else None


def oldest_due() -> datetime | None:
    """When the longest-waiting message that is due now became due, or None."""
    return (
        OutboxMessage.select(fn.MIN(OutboxMessage.next_attempt_at))
        .where(
            OutboxMessage.status == "queued",
            OutboxMessage.next_attempt_at <= clock.now(),
            _deliverable(),
        )
        .scalar()
    )


class Hooks:
    """What the rest of the product does when a message goes out or fails; called
    inside the transaction that records it, so a dispatch's events and its outbox
    agree."""

    def sent(self, row: OutboxMessage) -> None:
        return None

    def failed(self, row: OutboxMessage, reason: str, dead: bool) -> None:
        return None


@dataclass
class Delivery:
    """What one process keeps between its delivery passes of one channel: the
    deliverer's circuit breaker; messages it handed over whose record the database
    refused (a full disk, a held lock), recorded at the next pass and never sent again
    by this process; and claims on rows a stopped pass never tried, released at the
    next pass rather than waiting out their lease."""

    breaker: Breaker = field(default_factory=Breaker)
    sent: dict[int, OutboxMessage] = field(default_factory=dict)
    unclaimed: list[tuple[str, list[int]]] = field(default_factory=list)

    @classmethod
    def of(cls, deliverer: Deliverer) -> Delivery:
        """Each webhook endpoint fails on its own: one down holds back no other, so that
        channel's breaker never opens."""
        return cls() if deliverer.one_provider else cls(breaker=Breaker(open_after=None))


def new_claim() -> str:
    """Who holds a claim: this process (as its heartbeat names it), and this pass."""
    host, pid = heartbeat.identity()
    return f"{host[:40]}:{pid}:{secrets.token_hex(4)}"


def _due(channel: str, limit: int, lease: timedelta) -> tuple[list[OutboxMessage], str]:
    """Claim the rows to send now for the lease, committed before anything is sent: a
    send whose outcome cannot be written (a full disk, a held lock) leaves its row
    claimed, so it is not sent again before the lease ends. On SQLite one process
    delivers (the scheduler's lock file) and the lease runs on its clock; on PostgreSQL
    on the database's."""
    claim = new_claim()
    now = clock.now()
    if db.is_sqlite():
        due = (channel, now, now)
        # the usual poll, once per pass: no lock for nothing, one column read
        if db.database.execute_sql(DUE_SQL.format(columns='o."id"'), (*due, 1)).fetchone() is None:
            return [], claim
        with db.write():
            rows = list(OutboxMessage.raw(DUE_SQL.format(columns="o.*"), *due, limit))
            for row in rows:
                row.was_claimed_by = row.claimed_by
            marks = ", ".join("?" * len(rows))
            db.database.execute_sql(
                CLAIM_ROWS_SQL.format(marks=marks), (claim, now + lease, *(r.id for r in rows))
            )
        return rows, claim
    with db.write():
        rows = list(OutboxMessage.raw(CLAIM_SQL, channel, now, limit, claim, lease.total_seconds()))
    rows.sort(key=lambda r: (r.priority, r.next_attempt_at, r.id))
    return rows, claim


def let_go_of_earlier_claims() -> int:
    """SQLite, when this process has just taken the scheduler's lock file: no other
    process delivers, so whatever claims are left belong to one that stopped (killed,
    crashed) and need not wait out their lease. Its last sends may repeat, with the
    same Message-ID, as after any crash; the claim stays named, so that is logged."""
    with db.write():
        return (
            OutboxMessage.update(claimed_until=None)
            .where(OutboxMessage.status == "queued", OutboxMessage.claimed_until.is_null(False))
            .execute()
        )


def deliver_due(
    deliverer: Deliverer,
    keys: Keys,
    hooks: Hooks | None = None,
    limit: int = BATCH,
    lease: timedelta = timedelta(seconds=120),
    state: Delivery | None = None,
    senders: Senders | None = None,
) -> dict[str, int]:
    """Send what is due on the deliverer's channel, through ``senders`` (the channel's
    kept sessions, several at once) or senders of this pass alone; counts of sent,
    retried and dead-lettered rows, and of rows made due at once because the provider
    answers again ("released").

    The database may refuse a write (a full disk, a lock held too long): then the pass
    stops, since every further send would be one more whose outcome is lost. A message
    sent meanwhile is remembered and recorded as sent once the database takes writes
    again (its row stays claimed, so no process sends it before); nothing more is sent
    until then."""
    hooks = hooks or Hooks()
    state = state or Delivery.of(deliverer)
    breaker = state.breaker
    channel = deliverer.channel
    counts = {"sent": 0, "retry": 0, "dead": 0, "released": 0}
    if not _record_remembered(state, hooks):
        return counts
    state.unclaimed = [(claim, ids) for claim, ids in state.unclaimed if not _release(ids, claim)]
    allowed = breaker.allowance(limit)
    if allowed == 0:  # the relay is down and no probe is due
        return counts
    try:
        due, claim = _due(channel, allowed, lease)
    except Exception as exc:  # the database refuses: nothing claimed, nothing sent
        log.error("outbox: cannot claim due %s, nothing sent this pass: %s", channel, cause(exc))
        return counts
    if again := [r.id for r in due if getattr(r, "was_claimed_by", None)]:
        log.warning(
            "outbox: %s messages %s were claimed by a pass that never recorded their "
            "outcome (a stopped process, or the database refused the write): they go now "
            "with the same id; one that pass had sent already reaches its recipient twice "
            "where the provider cannot tell",
            channel,
            ", ".join(f"#{n}" for n in again),
        )
    tally = threading.Lock()  # the senders run side by side
    record = SentRecords(hooks).record

    def send(row: OutboxMessage, session: Deliverer) -> bool:
        try:
            outcome = send_claimed(
                row, claim, lease, deliverer, keys, hooks, breaker, session, record
            )
        except Unrecorded as refused:
            if refused.sent:
                with tally:
                    state.sent[row.id] = row
            return False
        with tally:
            if outcome:
                counts[outcome] += 1
            return not (breaker.is_open and counts["retry"])  # opened: this was the probe

    own = senders is None
    senders = senders or Senders(deliverer, keep=False)
    try:
        untried = senders.run(due, send)
    finally:
        if own:
            senders.close()
    if untried and not _release([r.id for r in untried], claim):
        state.unclaimed.append((claim, [r.id for r in untried]))
    _tell(channel, breaker)
    if breaker.recovered:  # the probe got through: a whole batch now, not at the next poll
        breaker.recovered = False
        counts["released"] = _release_backlog(channel)
        # senders of this pass alone are closed by now: the next pass makes its own
        more = deliver_due(deliverer, keys, hooks, limit, lease, state, None if own else senders)
        counts = {kind: counts[kind] + more[kind] for kind in counts}
    return counts


def more_due(counts: dict[str, int]) -> bool:
    """After a pass over the channels: go again at once? When a channel filled its batch
    (more may be due) or a backlog was just released."""
    return bool(counts["released"]) or counts["most"] >= BATCH


def _tell(channel: str, breaker: Breaker) -> None:
    """Tell every process (and /healthz) whether the channel's messages go through:
    since when they have failed, kept from the first process that saw it; or that they
    go through again."""
    news = breaker.news()
    if news is None:
        return
    name = failing_setting(channel)
    try:
        with db.write():
            if news == "failing":  # since the first process saw it, not since the latest
                since = breaker.failing_since or clock.now()
                Setting.insert(name=name, value=since.isoformat()).on_conflict_ignore().execute()
            else:
                Setting.delete().where(Setting.name == name).execute()
    except Exception as exc:  # told at the next pass instead; delivery goes on
        log.warning("outbox: could not record whether %s goes through: %s", channel, cause(exc))
        return
    breaker.told = news
    if news == "failing":
        log.warning(
            "outbox: %d %s messages in a row failed, the %s seems down: trying one "
            "every %d s until it answers",
            breaker.failures,
            channel,
            PROVIDER_WORDS[channel],
            breaker.probe_every.total_seconds(),
        )
    elif breaker.recovered:
        log.info("outbox: the %s answers again; sending the backlog now", PROVIDER_WORDS[channel])


PROVIDER_WORDS = {
    "email": "mail relay",
    "sms": "SMS provider",
    "push": "push server",
    "webhook": "webhook endpoint",
}


def _release(ids: list[int], claim: str) -> bool:
    """Let go of claimed rows this pass did not try, so they need not wait a lease;
    False when the database refused (the next pass tries again)."""
    try:
        with db.write():
            OutboxMessage.update(claimed_by=None, claimed_until=None).where(
                OutboxMessage.id.in_(ids), OutboxMessage.claimed_by == claim
            ).execute()
    except Exception as exc:
        log.warning("outbox: could not release %d untried messages: %s", len(ids), cause(exc))
        return False
    return True


def _release_backlog(channel: str) -> int:
    """The provider answers again: every message of its channel waiting out a backoff
    is due now, rather than each after its own (up to five minutes)."""
    now = clock.now()
    try:
        with db.write():
            return (
                OutboxMessage.update(next_attempt_at=now)
                .where(
                    OutboxMessage.status == "queued",
                    OutboxMessage.channel == channel,
                    OutboxMessage.attempts > 0,
                    OutboxMessage.next_attempt_at > now,
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
                log.debug("outbox: message #%d still unrecorded: %s", row_id, cause(exc))
                return False
            log.error(  # a fault of this row alone, not of the database
                "outbox: the send of message #%d cannot be recorded (%s): it goes again "
                "after its lease, with the same Message-ID",
                row_id,
                cause(exc),
            )
        else:
            log.info("outbox: recorded message #%d as sent, now that the database takes it", row_id)
        del state.sent[row_id]
    return True


class Unrecorded(Exception):
    """The database refused to record an outcome; the pass stops. ``sent``: the
    deliverer had handed the message over."""

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
    row: OutboxMessage,
    claim: str,
    lease: timedelta,
    deliverer: Deliverer,
    keys: Keys,
    hooks: Hooks,
    breaker: Breaker | None = None,
    session: Deliverer | None = None,
    record: Callable[[OutboxMessage], str | None] | None = None,
) -> str | None:
    """Send one row this pass claimed, if the claim still holds; the outcome, or None
    when another process holds the row now. ``record`` writes a send down (the pass's
    SentRecords). Raises Unrecorded when the outcome could not be written."""
    if not db.is_sqlite() and not _renewed(row, claim, lease):
        _lost(row)
        return None
    breaker = breaker or Breaker()
    try:
        message = deliverer.compose(row, keys)
    except Exception as exc:  # altered, or under a key no longer held: it never will be
        unreadable = DeliveryError(
            f"the stored message cannot be read ({type(exc).__name__})", permanent=True
        )
        return _failure_recorded(row, claim, unreadable, hooks)
    try:
        receipt = (session or deliverer).send(message) or Receipt()
    except Exception as exc:  # a deliverer's bug must not stop the channel: a failed try
        if not isinstance(exc, DeliveryError):
            log.exception("outbox: the %s deliverer failed unexpectedly", row.channel)
            exc = DeliveryError(f"the send failed unexpectedly ({type(exc).__name__})")
        if exc.permanent or exc.retry_after is not None:
            breaker.answered()  # the provider answers: a refusal, or "not so fast"
        else:
            breaker.failed()
        return _failure_recorded(row, claim, exc, hooks)
    breaker.answered()
    row.sent_at = clock.now()
    row.provider_id, row.last_status = receipt.provider_id[:64], receipt.status
    try:
        return record(row) if record else _write_sent(row, hooks)
    except Exception as exc:
        log.error(
            "outbox: %s %s #%d was sent but that could not be recorded (%s): it is "
            "recorded once the database takes writes again, and nothing more is sent "
            "until then",
            row.kind,
            row.channel,
            row.id,
            cause(exc),
        )
        raise Unrecorded(sent=True) from exc


def _renewed(row: OutboxMessage, claim: str, lease: timedelta) -> bool:
    """One statement on its own (no transaction around it): once per email, under load."""
    try:
        cursor = db.database.execute_sql(RENEW_SQL, (lease.total_seconds(), row.id, claim))
    except Exception as exc:  # the database went away: nothing sent, the pass stops
        log.warning("outbox: cannot renew the claim on message #%d: %s", row.id, cause(exc))
        raise Unrecorded(sent=False) from exc
    return cursor.rowcount == 1


def _lost(row: OutboxMessage) -> None:
    log.warning("outbox: message #%d is another process's now; it records it", row.id)


def _failure_recorded(
    row: OutboxMessage, claim: str, exc: DeliveryError, hooks: Hooks
) -> str | None:
    try:
        return _record_failure(row, claim, exc, hooks)
    except Exception as refused:
        log.error(
            "outbox: the failed try of %s message #%d could not be recorded (%s): it goes "
            "again after the lease",
            row.kind,
            row.id,
            cause(refused),
        )
        raise Unrecorded(sent=False) from refused


def _write_sent(row: OutboxMessage, hooks: Hooks) -> str | None:
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
            "outbox: %s message #%d went out, but what follows from it could not be recorded (%s)",
            row.kind,
            row.id,
            cause(exc),
        )
    return _record_sent(row, hooks, with_hooks=False)


def _record_sent(row: OutboxMessage, hooks: Hooks, with_hooks: bool) -> str | None:
    with db.write():
        return _mark_sent(row, hooks if with_hooks else None)


def _mark_sent(row: OutboxMessage, hooks: Hooks | None) -> str | None:
    """At the time the relay took it, which may be a while before the database let it
    be written down; inside the caller's write transaction."""
    cursor = db.database.execute_sql(
        db.sql(MARK_SENT),
        (row.sent_at, row.attempts + 1, row.provider_id, row.last_status, row.id),
    )
    if cursor.rowcount != 1:
        _lost(row)
        return None
    row.status = "sent"
    if hooks is not None:
        hooks.sent(row)
    log.debug("outbox: sent %s %s #%d", row.kind, row.channel, row.id)
    return "sent"


class SentRecords:
    """A pass's sends written down together: a sender whose send went through waits
    for its record (so no more than one send per sender is ever unrecorded), and while
    one sender writes, those that finish meanwhile gather into the next transaction,
    one commit (an fsync, a turn of the write lock) for all of them."""

    def __init__(self, hooks: Hooks):
        self.hooks = hooks
        self._turn = threading.Condition()
        self._waiting: list[OutboxMessage] = []
        self._outcomes: dict[int, str | None | BaseException] = {}
        self._writing = False

    def record(self, row: OutboxMessage) -> str | None:
        """The outcome of recording row's send; raises what the database raised."""
        with self._turn:
            self._waiting.append(row)
            while self._writing and row.id not in self._outcomes:
                self._turn.wait()
            writes = row.id not in self._outcomes  # no one writes: this sender writes all
            if writes:
                self._writing = True
                rows, self._waiting = self._waiting, []
        if writes:
            try:
                outcomes = _write_all_sent(rows, self.hooks)
            except BaseException as exc:
                outcomes = dict.fromkeys((r.id for r in rows), exc)
            with self._turn:
                self._outcomes.update(outcomes)
                self._writing = False
                self._turn.notify_all()
        with self._turn:
            outcome = self._outcomes.pop(row.id)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _write_all_sent(
    rows: list[OutboxMessage], hooks: Hooks
) -> dict[int, str | None | BaseException]:
    """Record sends in one transaction; when one of them cannot be (its own fault, not
    the database's), each on its own, so that fault stays with its row: each row's
    outcome, or what stopped its record."""
    if len(rows) > 1:
        try:
            with db.write():
                return {row.id: _mark_sent(row, hooks) for row in rows}
        except Exception as exc:
            if db.is_away(exc):
                raise
    outcomes: dict[int, str | None | BaseException] = {}
    for row in rows:
        try:
            outcomes[row.id] = _write_sent(row, hooks)
        except Exception as exc:  # that row's sender says so; the others are written
            outcomes[row.id] = exc
    return outcomes


def _record_failure(row: OutboxMessage, claim: str, exc: DeliveryError, hooks: Hooks) -> str | None:
    now = clock.now()
    attempts = row.attempts + 1
    delay = exc.retry_after if exc.retry_after is not None else retry_delay(attempts)
    dead = exc.permanent or now + timedelta(seconds=delay) >= row.expires_at
    reason = str(exc)[:1000]
    with db.write():
        changed = (
            OutboxMessage.update(
                status="dead" if dead else "queued",
                attempts=attempts,
                last_error=reason,
                last_status=exc.status,
                next_attempt_at=now + timedelta(seconds=delay),
                claimed_by=None,
                claimed_until=None,
            )
            .where(
                OutboxMessage.id == row.id,
                OutboxMessage.status == "queued",
                OutboxMessage.claimed_by == claim,  # only the claim's holder records a failure
            )
            .execute()
        )
        if changed != 1:
            _lost(row)
            return None
        hooks.failed(row, reason, dead)
    log.warning(
        "outbox: %s %s #%d failed (try %d)%s: %s",
        row.kind,
        row.channel,
        row.id,
        attempts,
        ", dead-lettered" if dead else "",
        reason,
    )
    return "dead" if dead else "retry"


def retry(row_ids: list[int] | None = None) -> int:
    """Queue dead-lettered (or given) rows again, due now, with a fresh lifetime."""
    now = clock.now()
    query = OutboxMessage.update(
        status="queued",
        next_attempt_at=now,
        expires_at=now + LIFETIME,
        last_error="",
    )
    if row_ids is None:
        query = query.where(OutboxMessage.status == "dead")
    else:
        query = query.where(OutboxMessage.id.in_(row_ids), OutboxMessage.status != "sent")
    with db.write():
        count = query.execute()
    wake()
    return count

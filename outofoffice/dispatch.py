"""Dispatches: a caller's request, the vendors it is offered to, and every step.

Every state change writes its dispatch event in the same transaction, and every email
it causes is an outbox row in that transaction too: a request the caller saw accepted
is on disk with its vendor email before the 303 leaves.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import peewee

from outofoffice import (
    abuse,
    accounts,
    billing,
    clock,
    db,
    events,
    notify,
    outbox,
    push,
    routing,
    sms,
    webhooks,
)
from outofoffice.errors import ValidationError
from outofoffice.events import event
from outofoffice.instance import Instance
from outofoffice.keys import hash_token
from outofoffice.models import (
    Account,
    Category,
    Dispatch,
    DispatchEvent,
    OutboxMessage,
    Subject,
    Vendor,
)
from outofoffice.policy import DESCRIPTION_MAX, PHONE_MAX, PHONE_MIN, PHONE_MIN_DIGITS
from outofoffice.templating import render_email

log = logging.getLogger(__name__)

STATUSES = (
    "open",
    "sent",
    "accepted",
    "declined",
    "escalated",
    "unassigned",
    "resolved",
    "closed",
    "failed",
)
WAITING = ("sent", "declined", "escalated")  # a vendor has been asked and not answered
JOINABLE = (*WAITING, "accepted")  # a repeat joins these; an unassigned request pages again
JOINABLE_SQL = ", ".join(f"'{status}'" for status in JOINABLE)  # constants, not input
REPEAT_SQL = (
    'SELECT * FROM "dispatch" WHERE "account_id" = ? AND "caller_phone_digest" = ?'  # noqa: S608
    ' AND "subject_id" IS ? AND "category_id" IS ? AND "created_at" >= ?'
    f' AND "status" IN ({JOINABLE_SQL}) ORDER BY "created_at" DESC'
)
FINISHED = ("resolved", "closed")
NEEDS_OFFICE = ("unassigned", "failed")
ACTIONS = {"accept": "Accept", "decline": "Decline", "resolve": "Resolved"}
REPEAT_WINDOW = timedelta(minutes=10)
ACTION_LINK_DAYS = 7
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L
PHONE = re.compile(r"[0-9+()./ -]+")


class ActionError(Exception):
    """An action link that cannot act; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, account: Account | None = None):
        super().__init__(message)
        self.status = status
        self.account = account  # the firm, when the link is genuine: its page, its phone


TRIES = re.compile(r"(?s)(.*) \((\d+) tries\)")


def repeated_event(d: Dispatch, kind: str, vendor_id: int | None, detail: str) -> None:
    """An event that may repeat (the same email failing the same way, try after try) is
    one line with a count, not one line per try; other emails of the dispatch failing
    meanwhile do not break the run, anything else happening does."""
    recent = (
        DispatchEvent.select()
        .where(DispatchEvent.dispatch == d.id)
        .order_by(DispatchEvent.id.desc())
        .limit(20)
    )
    for last in recent:
        if last.kind != kind:
            break
        counted = TRIES.fullmatch(last.detail)
        same, tries = (counted.group(1), int(counted.group(2))) if counted else (last.detail, 1)
        if same == detail and last.vendor_id == vendor_id:
            DispatchEvent.update(detail=f"{detail} ({tries + 1} tries)").where(
                DispatchEvent.id == last.id
            ).execute()
            return
    event(d, kind, vendor_id, detail)


# --- the caller's request -------------------------------------------------------------


def phone_problem(phone: str) -> str | None:
    digits = sum(c.isdigit() for c in phone)
    if not PHONE_MIN <= len(phone) <= PHONE_MAX or digits < PHONE_MIN_DIGITS:
        return (
            f"Enter a phone number of {PHONE_MIN} to {PHONE_MAX} characters "
            f"with at least {PHONE_MIN_DIGITS} digits."
        )
    if not PHONE.fullmatch(phone):
        return "Use only digits, spaces and + ( ) - . in the phone number."
    return None


def _owned(model, account: Account, raw: str):
    """The account's own row with this id, or None (never another account's)."""
    item_id = db.parse_id(raw)
    if item_id is None:
        return None
    table = model._meta.table_name  # from the schema, never from input
    query = f'SELECT * FROM "{table}" WHERE "id" = ? AND "account_id" = ?'  # noqa: S608
    return db.first(model, query, item_id, account.id)


def clean_request(account: Account, form: dict[str, str]) -> dict:
    """A caller's form, validated (SPEC section 8b); ValidationError names each field."""
    data = {k: (form.get(k) or "").strip() for k in ("subject", "category", "name", "phone")}
    data["description"] = (form.get("description") or "").strip()
    errors: dict[str, str] = {}
    labels = accounts.labels(account.industry)
    subject = _owned(Subject, account, data["subject"])
    if subject is None and Subject.select().where(Subject.account == account).exists():
        errors["subject"] = f"Choose one of the {labels['subjects'].lower()}."
    category = _owned(Category, account, data["category"])
    if category is None and Category.select().where(Category.account == account).exists():
        errors["category"] = "Choose what the request is about."
    if problem := accounts.text_problem(data["name"], "your name"):
        errors["name"] = problem
    if problem := phone_problem(data["phone"]):
        errors["phone"] = problem
    description = data["description"]
    if not description:
        errors["description"] = "Describe the problem."
    elif len(description) > DESCRIPTION_MAX:
        errors["description"] = (
            f"Use at most {DESCRIPTION_MAX} characters (now {len(description)})."
        )
    elif any(ord(c) < 32 and c not in "\r\n\t" for c in description):
        errors["description"] = "Remove control characters from the description."
    if errors:
        raise ValidationError(errors)
    return data | {"subject": subject, "category": category}


def _new_reference(account: Account, length: int) -> str:
    prefix = (re.sub(r"[^A-Za-z0-9]", "", account.slug).upper() + "XXX")[:3]
    return f"{prefix}-{''.join(secrets.choice(REFERENCE_ALPHABET) for _ in range(length))}"


def _insert_with_reference(
    instance: Instance, account: Account, values: dict
) -> tuple[Dispatch, str]:
    """Insert the dispatch under a fresh reference. One that is taken (by this firm's
    earlier requests, or by another process this moment) fails the unique index, and
    a longer one is tried, inside a savepoint, so the rest of the transaction stands."""
    for length in (4, 4, 4, 5, 6, 8):
        reference = _new_reference(account, length)
        token = status_token(instance, reference)
        row = values | {"reference": reference, "status_token_hash": hash_token(token)}
        try:
            with db.database.atomic():
                row_id = db.insert(Dispatch, **row)
        except peewee.IntegrityError as exc:
            if "reference" not in str(exc) and "status_token" not in str(exc):
                raise
            continue
        d = Dispatch(**row)
        d.id = row_id
        return d, token
    raise RuntimeError("could not find a free reference")


def status_url(instance: Instance, token: str) -> str:
    return instance.url(f"/s/{token}")


def status_token(instance: Instance, reference: str) -> str:
    """The caller's private status link token: derived, so a repeat can show it again."""
    return instance.keys.sign("status-link", f"status:{reference}")


def _phone_digest(instance: Instance, phone: str) -> str:
    return instance.keys.sign("phone-digest", "".join(c for c in phone if c.isdigit()))


@dataclass
class Submission:
    dispatch: Dispatch
    status_token: str
    repeat: bool


def submit(instance: Instance, account: Account, form: dict[str, str], ip: str = "") -> Submission:
    """Create a dispatch and queue its emails in one transaction (SPEC section 6).
    abuse.Refused when the address or the firm is over its hourly limit."""
    if account.status != "active":
        raise ActionError("This firm is not taking requests online.", 403)
    data = clean_request(account, form)
    now = clock.now()
    keys = instance.keys
    digest = _phone_digest(instance, data["phone"])
    subject, category = data["subject"], data["category"]
    matched = routing.match(
        account, subject.id if subject else None, category.id if category else None, now
    )
    route, vendors = matched or (None, [])
    silence_ends = now + timedelta(minutes=account.escalate_after_minutes)
    with db.write():
        # One submission per firm, and per address, at a time in the whole installation:
        # the repeat check and the hourly limits below read, then this writes.
        db.lock(("dispatch", account.id), *([("dispatch-ip", ip)] if ip else []))
        abuse.check_dispatch(instance.config, account, ip)
        abuse.record(ip, "dispatch", account)
        repeat = db.first(
            Dispatch,
            REPEAT_SQL,
            account.id,
            digest,
            subject.id if subject else None,
            category.id if category else None,
            now - REPEAT_WINDOW,
        )
        if repeat is not None:
            # The same phone, subject and category is not proof of the same person:
            # the repeat learns the reference, never the first caller's status link.
            event(repeat, "repeat", detail="the same phone sent this request again")
            return Submission(repeat, "", True)
        values = dict(
            account=account,
            subject=subject,
            category=category,
            subject_label=subject.name if subject else "",
            category_label=category.name if category else "",
            caller_name=keys.encrypt(data["name"]),
            caller_phone=keys.encrypt(data["phone"]),
            caller_phone_digest=digest,
            description=keys.encrypt(data["description"]),
            status="sent" if vendors else "unassigned",
            route=route,
            chain=[v.id for v in vendors],
            chain_position=0,
            vendor=vendors[0] if vendors else None,
            escalate_at=silence_ends if vendors else None,
            offered_at=now if vendors else None,
            created_at=now,
            updated_at=now,
        )
        d, token = _insert_with_reference(instance, account, values)
        with events.together(d):  # its first history lines in one statement
            event(d, "submitted")
            webhooks.queue_event(instance, d, "dispatch.created")
            text_caller(
                instance,
                d,
                lambda: sms.caller_confirmation_text(instance, d, status_url(instance, token)),
            )
            if vendors:
                event(d, "routed", vendors[0], routing.describe(route, d))
                queue_offer(instance, d, vendors[0])
                notify.new_dispatch(instance, d, data)
            else:  # the owner's alert says it all
                event(d, "unrouted", detail="no route matches this request")
                webhooks.queue_event(instance, d, "dispatch.unassigned")
                notify.alert(instance, d, "No route matches this request; nobody was paged.", data)
    outbox.wake()
    return Submission(d, token, False)


def _set(d: Dispatch, **fields) -> None:
    """Write only what changes: a column another process set meanwhile stays as it is."""
    fields["updated_at"] = clock.now()
    for name, value in fields.items():
        setattr(d, name, value)
    d.save(only=[Dispatch._meta.fields[name] for name in fields])


def _offer(instance: Instance, d: Dispatch, vendor: Vendor, position: int, status: str) -> None:
    """Email the dispatch to one vendor. The silence timer runs from now and starts
    again when the email is sent: an email that cannot go out passes on too."""
    now = clock.now()
    deadline = now + timedelta(minutes=d.account.escalate_after_minutes)
    _set(
        d,
        vendor=vendor,
        chain_position=position,
        status=status,
        escalate_at=deadline,
        offered_at=now,
    )
    queue_offer(instance, d, vendor)


def caller(instance: Instance, d: Dispatch) -> dict[str, str]:
    keys = instance.keys
    return {
        "name": keys.decrypt(d.caller_name),
        "phone": keys.decrypt(d.caller_phone),
        "description": keys.decrypt(d.description),
    }


def subject_text(d: Dispatch) -> str:
    if d.subject_id and d.subject.address:
        return f"{d.subject.name}, {d.subject.address}"
    return d.subject_label


def queue_offer(instance: Instance, d: Dispatch, vendor: Vendor) -> None:
    """Ask one vendor by every channel they have and the installation sends by: email
    always, SMS when their phone can take one, push to their ntfy topic."""
    queue_vendor_email(instance, d, vendor)
    ways = set(vendor.channels or ()) & set(instance.deliverers)
    if "sms" in ways and billing.sms_paused(instance.config, d.account):
        ways.discard("sms")
    emergency = is_emergency(d)
    common = dict(kind="vendor", account=d.account, dispatch=d, vendor=vendor, emergency=emergency)
    if "sms" in ways and (phone := sms.e164(vendor.phone)):
        outbox.enqueue_message(
            instance.keys,
            channel="sms",
            to=instance.keys.encrypt(phone),
            body=sms.offer_text(instance, d, vendor),
            **common,
        )
        event(d, "sms_queued", vendor)
    if "push" in ways and vendor.push_topic:
        outbox.enqueue_message(
            instance.keys,
            channel="push",
            to=vendor.push_topic,
            body=push.offer_payload(instance, d, vendor),
            **common,
        )
        event(d, "push_queued", vendor)


def text_caller(instance: Instance, d: Dispatch, text: Callable[[], str]) -> None:
    """An update to the caller by SMS, when the firm turned that on and the caller gave
    a number in international form; their phone is used for nothing else, and is
    stored encrypted here as everywhere."""
    account = d.account
    if not account.caller_sms or "sms" not in instance.deliverers:
        return
    if billing.sms_paused(instance.config, account):
        return
    phone = sms.e164(instance.keys.decrypt(d.caller_phone))
    if phone is None:
        return
    outbox.enqueue_message(
        instance.keys,
        channel="sms",
        to=instance.keys.encrypt(phone),
        body=text(),
        kind="caller",
        account=account,
        dispatch=d,
    )
    event(d, "sms_queued", detail="to the caller")


def is_emergency(d: Dispatch) -> bool:
    return bool(d.category_id and d.category.emergency)


def queue_vendor_email(instance: Instance, d: Dispatch, vendor: Vendor) -> None:
    """The vendor sees only what the dispatch needs (SPEC section 3)."""
    account = d.account
    links = {
        action: instance.url(f"/v/{action_token(instance, d, vendor, action)}")
        for action in ACTIONS
    }
    text, html = render_email(
        "vendor",
        vendor=vendor,
        caller=caller(instance, d),
        subject=subject_text(d),
        category=d.category_label,
        emergency=bool(d.category_id and d.category.emergency),
        reference=d.reference,
        firm=account.business_name,
        firm_phone=account.contact_phone,
        firm_email=account.email,
        links=links,
        labels=accounts.labels(account.industry),
        received=routing.local_time(account, d.created_at).strftime("%a %d %b %H:%M"),
        minutes=account.escalate_after_minutes,
        last=d.chain_position + 1 >= len(d.chain),
    )
    urgent = "URGENT: " if is_emergency(d) else ""
    where = d.subject_label or account.business_name
    outbox.enqueue(
        instance.keys,
        sender=instance.sender,
        to=vendor.email,
        subject=f"{urgent}{d.category_label or 'Request'} at {where} ({d.reference})",
        text=text,
        html=html,
        kind="vendor",
        account=account,
        dispatch=d,
        vendor=vendor,
        reply_to=account.email,
        headers={"X-Priority": "1"} if urgent else None,
        emergency=bool(urgent),
    )
    event(d, "email_queued", vendor)


def _next_vendor(d: Dispatch) -> tuple[Vendor, int] | None:
    for position in range(d.chain_position + 1, len(d.chain)):
        vendor = Vendor.get_or_none(Vendor.id == d.chain[position], Vendor.active == True)  # noqa: E712
        if vendor is not None:
            return vendor, position
    return None


def _pass_on(
    instance: Instance, d: Dispatch, kind: str, reason: str, by: Vendor | None = None
) -> None:
    """Offer the dispatch to the next vendor of its chain, or give up and tell the owner.

    The event is ``kind`` (declined: by the vendor who declined; escalated: to the
    vendor asked next, as the history has always shown it)."""
    found = _next_vendor(d)
    nxt = found[0] if found else None
    outcome = f"passed to {nxt.name}" if nxt else "no vendor left"
    event(d, kind, by or nxt, "; ".join(p for p in (reason, outcome) if p))
    if found is None:
        event(d, "unassigned", detail="every vendor of the route was asked")
        _set(d, status="unassigned", vendor=None, escalate_at=None)
        webhooks.queue_event(instance, d, f"dispatch.{kind}")
        webhooks.queue_event(instance, d, "dispatch.unassigned")
        notify.alert(
            instance, d, "Every vendor was asked and nobody accepted.", caller(instance, d)
        )
        return
    _offer(instance, d, nxt, found[1], kind)
    webhooks.queue_event(instance, d, f"dispatch.{kind}")


# --- the outbox tells us about vendor emails ------------------------------------------


ESCALATE_MINUTES_SQL = 'SELECT "escalate_after_minutes" FROM "account" WHERE "id" = ?'
WAITING_SQL = ", ".join(f"'{status}'" for status in WAITING)  # constants, not input
START_TIMER_SQL = (
    'UPDATE "dispatch" SET "escalate_at" = ?, "updated_at" = ? WHERE "id" = ?'  # noqa: S608
    f' AND "vendor_id" = ? AND "status" IN ({WAITING_SQL})'
)


# What a message's failure is called in the history, by channel; webhook deliveries are
# listed on the webhooks page, and only one given up on is in a dispatch's history.
FAILED_WORDS = {
    "email": "the email to the vendor could not be delivered",
    "sms": "the SMS to the vendor could not be delivered",
    "push": "the push notification to the vendor could not be delivered",
}


class DispatchHooks(outbox.Hooks):
    def __init__(self, instance: Instance):
        self.instance = instance

    def sent(self, row: OutboxMessage) -> None:
        """A vendor's message went out: record it and start that vendor's silence timer
        (a few targeted statements: this runs once per message, under load). A caller's
        SMS is recorded too; webhook deliveries are on the webhooks page."""
        if not row.dispatch_id or row.kind not in ("vendor", "caller"):
            return
        db.insert(
            DispatchEvent,
            dispatch=row.dispatch_id,
            account=row.account_id,
            at=row.sent_at,
            kind=f"{row.channel}_sent",
            vendor=row.vendor_id,
            detail="to the caller" if row.kind == "caller" else "",
        )
        if row.kind != "vendor":
            return
        execute = db.database.execute_sql
        minutes = execute(db.sql(ESCALATE_MINUTES_SQL), (row.account_id,)).fetchone()[0]
        due = row.sent_at + timedelta(minutes=minutes)
        execute(db.sql(START_TIMER_SQL), (due, row.sent_at, row.dispatch_id, row.vendor_id))

    def _recipient(self, row: OutboxMessage) -> str:
        """Who a failed message was for, in the history: an SMS row's number is stored
        encrypted, and a caller's stays out of the history."""
        if row.channel == "sms":
            return (
                "the caller" if row.kind == "caller" else self.instance.keys.decrypt(row.recipient)
            )
        if row.channel == "push":
            return "the vendor's ntfy topic"
        if row.channel == "webhook":
            return f"the webhook endpoint {row.recipient}"
        return row.recipient

    def failed(self, row: OutboxMessage, reason: str, dead: bool) -> None:
        if not row.dispatch_id:  # an email's dead letter is the owner's to know of
            mine = row.account_id and row.kind not in notify.OWNER_KINDS
            if dead and mine and row.channel == "email":
                notify.dead_letter(self.instance, row)
            return
        if row.channel == "webhook" and not dead:  # its tries are on the webhooks page
            return
        d = db.locked(Dispatch, row.dispatch_id)
        repeated_event(
            d, f"{row.channel}_failed", row.vendor_id, f"to {self._recipient(row)}: {reason}"
        )
        if not dead:
            return
        if (
            row.kind == "vendor"
            and d.status in WAITING
            and d.vendor_id == row.vendor_id
            and not _offer_reaches(d, row)
        ):
            _pass_on(self.instance, d, "escalated", FAILED_WORDS[row.channel])
        if row.kind not in notify.OWNER_KINDS and row.channel == "email":
            notify.dead_letter(self.instance, row, caller(self.instance, d))


def _offer_reaches(d: Dispatch, row: OutboxMessage) -> bool:
    """Another message of the offer this row was part of went out or is on its way: the
    vendor may still answer by that channel, so the silence timer decides."""
    since = d.offered_at or row.created_at
    return (
        OutboxMessage.select()
        .where(
            OutboxMessage.dispatch == d.id,
            OutboxMessage.vendor == row.vendor_id,
            OutboxMessage.kind == "vendor",
            OutboxMessage.id != row.id,
            OutboxMessage.status.in_(("queued", "sent")),
            OutboxMessage.created_at >= since,
        )
        .exists()
    )


def deliver_outbox(
    instance: Instance, senders: dict | None = None, channels: list[str] | None = None
) -> dict[str, int]:
    """The scheduler's delivery pass (and the tests'): send what is due on every
    channel (or those of ``channels``), through ``senders`` (each channel's kept
    sessions) or senders of the pass alone; the counts summed over the channels, and
    ``most``: the most one channel tried."""
    counts = {"sent": 0, "retry": 0, "dead": 0, "released": 0}
    most = 0
    hooks = DispatchHooks(instance)
    lease = timedelta(seconds=instance.config.scheduler.lease_seconds)
    for channel, deliverer in instance.deliverers.items():
        if channels is not None and channel not in channels:
            continue
        got = outbox.deliver_due(
            deliverer,
            instance.keys,
            hooks,
            lease=lease,
            state=instance.deliveries[channel],
            senders=(senders or {}).get(channel),
        )
        counts = {kind: counts[kind] + got[kind] for kind in counts}
        most = max(most, got["sent"] + got["retry"] + got["dead"])
    return counts | {"most": most}


# --- silence: escalation --------------------------------------------------------------


def escalate_due(instance: Instance) -> int:
    """Pass on every dispatch whose vendor stayed silent; driven by the database, so a
    restart loses no timer."""
    now = clock.now()
    due = [
        d.id
        for d in Dispatch.select(Dispatch.id)
        .join(Account)
        .where(
            Dispatch.status.in_(WAITING), Dispatch.escalate_at <= now, Account.status == "active"
        )
    ]
    passed = 0
    for dispatch_id in due:
        with db.write():
            # another process that holds it is passing it on: skip, never twice
            d = db.locked(Dispatch, dispatch_id, skip_locked=True)
            if d and d.status in WAITING and d.escalate_at and d.escalate_at <= now:
                minutes = d.account.escalate_after_minutes
                _pass_on(instance, d, "escalated", f"no answer in {minutes} minutes")
                passed += 1
    if passed:
        outbox.wake()
    return passed


# --- action links ---------------------------------------------------------------------


def action_token(
    instance: Instance, d: Dispatch, vendor: Vendor, action: str, expires: int | None = None
) -> str:
    """dispatch.vendor.action.expiry.HMAC: bound to one vendor, one action, 7 days (or
    the expiry of the link it follows from, so no link outlives the email's)."""
    expires = expires or int(clock.timestamp() + ACTION_LINK_DAYS * 86400)
    payload = f"{d.id}.{vendor.id}.{action}.{expires}"
    return f"{payload}.{instance.keys.sign('action-link', payload)}"


@dataclass
class ActionLink:
    dispatch: Dispatch
    vendor: Vendor
    action: str
    expires: int = 0

    @property
    def current(self) -> bool:
        """Is the request still this vendor's? Only then does the link show the caller.
        A vendor the owner deactivated is asked nothing more (a waiting request passes
        on at its silence timer), but finishes a job they already accepted."""
        return (
            self.dispatch.vendor_id == self.vendor.id
            and self.dispatch.status != "closed"
            and (self.vendor.active or self.dispatch.status in ("accepted", "resolved"))
        )

    def moved_on(self) -> str:
        """What happened, for a vendor whose link no longer shows the request."""
        d = self.dispatch
        if d.status == "closed":
            return "The office closed this request. Thank you; nothing more is needed."
        if d.vendor_id == self.vendor.id:
            return "The office took you off its list; it passes this request on."
        if d.status in ("accepted", "resolved"):
            return "Someone else accepted this request. Thank you; nothing more is needed."
        if d.status in NEEDS_OFFICE:
            return "The office is handling this request now. Thank you."
        return "It went to the next person on the list. Thank you; nothing more is needed."


def read_action(instance: Instance, token: str) -> ActionLink:
    """Check an action link's signature and expiry; ActionError if it cannot be used."""
    parts = token.split(".")
    if len(parts) != 5 or parts[2] not in ACTIONS or None in map(db.parse_id, parts[:2]):
        raise ActionError("This link is not valid. Use the link from the email as it is.", 404)
    payload, signature = ".".join(parts[:4]), parts[4]
    if not instance.keys.verify("action-link", payload, signature):
        raise ActionError("This link is not valid. Use the link from the email as it is.", 404)
    dispatch_id, vendor_id, action, expires = parts[:4]
    d = Dispatch.get_or_none(Dispatch.id == int(dispatch_id))
    vendor = Vendor.get_or_none(Vendor.id == int(vendor_id))
    if d is None or vendor is None or vendor.account_id != d.account_id:
        raise ActionError("This request no longer exists.", 404)
    account = d.account
    if db.parse_id(expires) is None or int(expires) < clock.timestamp():
        raise ActionError(
            f"Links in these emails work for {ACTION_LINK_DAYS} days, and this one is "
            f"older. Phone {account.business_name} about request {d.reference}.",
            410,
            account,
        )
    if account.status != "active":
        raise ActionError(
            f"{account.business_name} is not taking requests here now. Phone the firm.",
            410,
            account,
        )
    return ActionLink(d, vendor, action, int(expires))


def act(instance: Instance, token: str) -> tuple[ActionLink, bool]:
    """Do what an action link says; returns whether anything changed. Acting twice
    changes nothing; a vendor the request has moved away from can no longer act."""
    with db.write():
        link = read_action(instance, token)
        d = db.locked(Dispatch, link.dispatch.id)  # two clicks at once: one acts
        if d is None:  # deleted with its account a moment ago
            raise ActionError("This request no longer exists.", 404)
        link.dispatch = d
        if not link.current:
            raise ActionError(link.moved_on(), 409, d.account)
        if link.action == "accept":
            if d.status in WAITING:
                event(d, "accepted", link.vendor)
                _set(d, status="accepted", escalate_at=None)
                notify.accepted(instance, d, caller(instance, d))
                webhooks.queue_event(instance, d, "dispatch.accepted")
                text_caller(instance, d, lambda: sms.caller_accepted_text(d, link.vendor))
            elif d.status not in ("accepted", "resolved"):
                raise ActionError(
                    "This request can no longer be accepted: the office has it now.",
                    409,
                    d.account,
                )
            else:
                return link, False
        elif link.action == "decline":
            if d.status in WAITING:
                _pass_on(instance, d, "declined", "", by=link.vendor)
            elif d.status == "accepted":
                raise ActionError(
                    "You accepted this request. If you cannot do it, phone the office.",
                    409,
                    d.account,
                )
            else:
                raise ActionError(
                    "This request is no longer waiting for an answer.", 409, d.account
                )
        elif link.action == "resolve":
            if d.status in (*WAITING, "accepted"):
                event(d, "resolved", link.vendor)
                _set(d, status="resolved", escalate_at=None)
                webhooks.queue_event(instance, d, "dispatch.resolved")
                text_caller(instance, d, lambda: sms.caller_resolved_text(d))
            elif d.status == "resolved":
                return link, False
            else:
                raise ActionError("The office has this request now.", 409, d.account)
    outbox.wake()
    return link, True


# --- the owner ------------------------------------------------------------------------


def reassign(instance: Instance, account: Account, d: Dispatch, vendor_id: str) -> Vendor:
    vendor = _owned(Vendor, account, vendor_id)
    if vendor is None or not vendor.active:
        raise ValidationError({"vendor": "Choose one of your active vendors."})
    with db.write():
        d = db.locked(Dispatch, d.id)
        if d.status in FINISHED:
            raise ValidationError({"vendor": f"This request is {d.status}."})
        event(d, "reassigned", vendor, "by the owner")
        _offer(instance, d, vendor, d.chain_position, "sent")
    outbox.wake()
    return vendor


def close(instance: Instance, d: Dispatch, note: str = "") -> None:
    with db.write():
        d = db.locked(Dispatch, d.id)
        if d.status == "closed":
            return
        event(d, "closed", detail=note.strip()[:500] or "closed by the owner")
        _set(d, status="closed", escalate_at=None)
        webhooks.queue_event(instance, d, "dispatch.closed")
    outbox.wake()


def for_owner(account: Account, dispatch_id: int | str) -> Dispatch | None:
    """One of this account's dispatches, or None (never another account's)."""
    return _owned(Dispatch, account, dispatch_id)


def by_status_token(token: str) -> Dispatch | None:
    """The dispatch of a caller's status link, with its account (fixed statements: a
    caller's open status page asks every 30 seconds)."""
    d = db.first(
        Dispatch, 'SELECT * FROM "dispatch" WHERE "status_token_hash" = ?', hash_token(token)
    )
    if d is None:
        return None
    account = db.first(Account, 'SELECT * FROM "account" WHERE "id" = ?', d.account_id)
    if account is None or account.status != "active":
        return None
    d.account = account
    return d


def events_of(d: Dispatch) -> list[DispatchEvent]:
    """A dispatch's history, oldest first."""
    query = 'SELECT * FROM "dispatch_event" WHERE "dispatch_id" = ? ORDER BY "id"'
    return list(DispatchEvent.raw(db.sql(query), d.id))

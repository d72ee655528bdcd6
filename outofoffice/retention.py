"""The retention sweeps: each returns how many rows it removed.

They run hourly from the scheduler and all at once from `outofoffice sweep`. Each
deletes in small batches, one short write transaction per batch, so a sweep never
holds the write lock for long; afterwards the WAL is checkpointed (TRUNCATE) so the
deleted bytes do not linger in it (secure_delete overwrites them in the database). On
PostgreSQL the tables a sweep removed rows from are VACUUMed (docs/security.md says
what PostgreSQL still keeps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import peewee

from outofoffice import clock, db
from outofoffice.config import Config
from outofoffice.mail.filedrop import FileMailer
from outofoffice.models import (
    Account,
    AccountBilling,
    BillingEvent,
    BillingNotice,
    Category,
    Dispatch,
    DispatchEvent,
    Invite,
    IPRecord,
    JobRun,
    MagicLink,
    OutboxMessage,
    RequestCount,
    Route,
    RouteVendor,
    Session,
    SlugHold,
    SmsReply,
    Subject,
    Vendor,
    WebhookEndpoint,
)

log = logging.getLogger(__name__)

BATCH = 500
SMS_REPLY_DAYS = 30
BILLING_EVENT_DAYS = 30


def _delete_in_batches(model: type[peewee.Model], condition) -> int:
    removed = 0
    while True:
        with db.write():
            ids = [row.id for row in model.select(model.id).where(condition).limit(BATCH)]
            if not ids:
                return removed
            removed += model.delete().where(model.id.in_(ids)).execute()


def magic_links(config: Config) -> int:
    """Sign-in links that expired or were used."""
    now = clock.now()
    return _delete_in_batches(
        MagicLink, (MagicLink.expires_at <= now) | MagicLink.used_at.is_null(False)
    )


def sessions(config: Config) -> int:
    return _delete_in_batches(Session, Session.expires_at <= clock.now())


def ip_records(config: Config) -> int:
    cutoff = clock.now() - timedelta(days=config.retention.ip_days)
    return _delete_in_batches(IPRecord, IPRecord.at <= cutoff)


def sign_in_emails(config: Config) -> int:
    """Outbox rows of sign-in emails, once their link cannot work any more: they name
    who asked to sign in, and serve nothing after that."""
    cutoff = clock.now() - timedelta(minutes=config.retention.magic_link_minutes)
    return _delete_in_batches(
        OutboxMessage,
        OutboxMessage.kind.in_(("login", "signup", "email_change"))
        & (OutboxMessage.created_at <= cutoff),
    )


def account_deletions(config: Config) -> int:
    """Accounts whose owner asked for deletion: everything they own goes, child tables
    first in batches, and their slug is held."""
    now = clock.now()
    done = 0
    for account in Account.select().where(Account.status == "deleting"):
        sent = [
            r.message_id for r in OutboxMessage.select().where(OutboxMessage.account == account)
        ]
        addresses = {account.email} | {v.email for v in account.vendors}
        for model, column in (
            (DispatchEvent, DispatchEvent.account),
            (OutboxMessage, OutboxMessage.account),
            (Dispatch, Dispatch.account),
            (IPRecord, IPRecord.account),
        ):
            _delete_in_batches(model, column == account.id)
        with db.write():
            db.lock(("billing", account.id))  # a webhook storing a subscription waits
            hold_slug(account.slug, "deleted", config, now)
            Invite.delete().where(Invite.email == account.email).execute()
            account.delete_instance()  # the rest cascades: small tables
        if config.mail.backend == "file":  # copies of its emails in the data dir go too
            FileMailer(config).forget(sent, addresses)
        log.info("deleted account %s", account.slug)
        done += 1
    return done


def hold_slug(slug: str, reason: str, config: Config, now=None) -> None:
    """Keep a slug from anyone else for the hold period (callers may still have it)."""
    now = now or clock.now()
    expires = now + timedelta(days=config.retention.slug_hold_days)
    db.lock(("slug", slug))  # a signup for this slug waits, then sees the hold
    existing = SlugHold.get_or_none(SlugHold.slug == slug)
    if existing is None:
        SlugHold.create(slug=slug, reason=reason, created_at=now, expires_at=expires)
    else:
        existing.reason, existing.expires_at = reason, max(existing.expires_at, expires)
        existing.save(only=[SlugHold.reason, SlugHold.expires_at])


def slug_holds(config: Config) -> int:
    """Holds that ended, unless the account still exists (a disabled one keeps its slug)."""
    taken = Account.select(Account.slug)
    return _delete_in_batches(
        SlugHold, (SlugHold.expires_at <= clock.now()) & SlugHold.slug.not_in(taken)
    )


def request_counts(config: Config) -> int:
    """Even the aggregated server log is kept server_log_days at most."""
    cutoff = (clock.now() - timedelta(days=config.retention.server_log_days)).date()
    return _delete_in_batches(RequestCount, RequestCount.day < cutoff)


def invitations(config: Config) -> int:
    """Invitations that were used or expired (they may name the invited address)."""
    now = clock.now()
    return _delete_in_batches(Invite, (Invite.expires_at <= now) | Invite.used_at.is_null(False))


def sms_replies(config: Config) -> int:
    """The record of vendors' texts handled, by Twilio's id for each, kept 30 days: it
    is what refuses a replayed text (Twilio's signature carries no time)."""
    cutoff = clock.now() - timedelta(days=SMS_REPLY_DAYS)
    return _delete_in_batches(SmsReply, SmsReply.received_at <= cutoff)


def billing_events(config: Config) -> int:
    """The record of Stripe's webhook events handled, kept 30 days (Stripe sends an
    event again for three days at most), and the subscription cancellations done or
    given up as long (their account has gone already)."""
    cutoff = clock.now() - timedelta(days=BILLING_EVENT_DAYS)
    done = (OutboxMessage.channel == "billing") & (OutboxMessage.status != "queued")
    return _delete_in_batches(
        BillingEvent, BillingEvent.received_at <= cutoff
    ) + _delete_in_batches(OutboxMessage, done & (OutboxMessage.created_at <= cutoff))


SWEEPS: dict[str, Callable[[Config], int]] = {
    "magic links": magic_links,
    "sessions": sessions,
    "IP records": ip_records,
    "sign-in emails": sign_in_emails,
    "account deletions": account_deletions,
    "slug holds": slug_holds,
    "invitations": invitations,
    "request counts": request_counts,
    "SMS replies": sms_replies,
    "billing events": billing_events,
}


# The tables each sweep deletes from, to VACUUM after it removed something.
SWEPT: dict[str, tuple[type[peewee.Model], ...]] = {
    "magic links": (MagicLink,),
    "sessions": (Session,),
    "IP records": (IPRecord,),
    "sign-in emails": (OutboxMessage,),
    "account deletions": (
        DispatchEvent,
        OutboxMessage,
        WebhookEndpoint,
        Dispatch,
        IPRecord,
        Account,
        Vendor,
        Subject,
        Category,
        Route,
        RouteVendor,
        MagicLink,
        Session,
        Invite,
        AccountBilling,
        BillingNotice,
    ),
    "slug holds": (SlugHold,),
    "invitations": (Invite,),
    "request counts": (RequestCount,),
    "SMS replies": (SmsReply,),
    "billing events": (BillingEvent, OutboxMessage),
}


def sweep_all(config: Config) -> dict[str, int]:
    """Run every sweep now; returns what each removed."""
    removed = {name: sweep(config) for name, sweep in SWEEPS.items()}
    swept = {model for name, count in removed.items() if count for model in SWEPT[name]}
    if swept or db.is_sqlite():
        db.vacuum(sorted(swept, key=lambda model: model._meta.table_name))
    if any(removed.values()):
        log.info("sweep: %s", ", ".join(f"{k} {v}" for k, v in removed.items() if v))
    record_run("sweep", removed)
    return removed


def record_run(job: str, summary: dict) -> None:
    with db.write():
        JobRun.insert(job=job, finished_at=clock.now(), summary=summary).on_conflict(
            conflict_target=[JobRun.job],
            update={JobRun.finished_at: clock.now(), JobRun.summary: summary},
        ).execute()

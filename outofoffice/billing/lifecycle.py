"""How an account's billing moves: webhooks and the daily re-read store what the
provider says, and the notices follow from the state.

Every change is a read-then-write under the account's lock, so webhooks handled side by
side by two processes, the daily job and a duplicate delivery all end in one state and
one email. The provider is asked before the transaction opens (a slow Stripe never
holds a lock); what it said is kept only if no later answer was stored meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from outofoffice import clock, db, notify, outbox, retention, routing
from outofoffice.billing import enabled, provider_for
from outofoffice.billing.base import ENDED, FINAL, LIVE, BillingError, Event, Subscription
from outofoffice.billing.cancellation import queue_cancel
from outofoffice.billing.state import SINCE_SETTING, ServiceState, row_of, service_state
from outofoffice.models import (
    Account,
    AccountBilling,
    BillingEvent,
    BillingNotice,
    JobRun,
    Setting,
)

if TYPE_CHECKING:
    from outofoffice.instance import Instance
    from outofoffice.keys import Keys

log = logging.getLogger(__name__)

REFERENCE_PURPOSE = "billing-reference"


def note_switched_on() -> None:
    """Remember when billing was first seen on (accounts from before get a fresh trial
    from then); written once, whichever process starts first."""
    if Setting.get_or_none(Setting.name == SINCE_SETTING) is None:
        with db.write():
            Setting.insert(
                name=SINCE_SETTING, value=clock.now().isoformat()
            ).on_conflict_ignore().execute()


def ensure_trials(config) -> int:
    """Store the trial of every account that has none stored yet, so a change of
    trial_days later moves no trial already running."""
    missing = Account.select().where(
        ~Account.id.in_(AccountBilling.select(AccountBilling.account)),
        Account.status == "active",
    )
    made = 0
    for (account_id,) in missing.select(Account.id).tuples():
        with db.write():
            found = _locked_row(account_id, config.billing.trial_days)
            made += bool(found and found[2])
    return made


def _locked_row(account_id: int, trial_days: int) -> tuple[Account, AccountBilling, bool] | None:
    """Under the account's lock (the sweep takes it to delete the account): the account
    as it is now, its row (stored now if it was not yet) and whether it was made now;
    None when the account is gone."""
    db.lock(("billing", account_id))
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        return None
    row = AccountBilling.get_or_none(AccountBilling.account == account)
    made = row is None
    if made:
        row = row_of(account, trial_days)
        row.save(force_insert=True)
    return account, row, made


def _running(status: str) -> bool:
    return status in LIVE or status == "past_due"


def _takes(row: AccountBilling, sub: Subscription, fetched_at: datetime, other_runs: bool) -> bool:
    """Whether this answer may replace what is stored: not one read before the stored
    one, nor another subscription over the one that runs (``other_runs``: the stored
    one, asked again just now, still runs)."""
    if row.checked_at is not None and fetched_at < row.checked_at:
        return False
    return not (row.subscription_id and row.subscription_id != sub.id and other_runs)


def _store(row: AccountBilling, sub: Subscription, fetched_at: datetime) -> None:
    if row.subscription_id != sub.id:  # a new subscription: the old one's end is not its
        row.ended_at = None
    row.subscription_id = sub.id
    row.customer_id = sub.customer or row.customer_id
    row.status = sub.status
    row.period_end = sub.period_end
    row.ended_at = sub.ended_at or ((row.ended_at or fetched_at) if sub.status in ENDED else None)
    row.checked_at = fetched_at
    row.save()


@dataclass(frozen=True)
class Outcome:
    """What a webhook did: ``handled``, ``duplicate`` or ``ignored`` (nothing of ours)."""

    result: str
    account_id: int | None = None


# --- which account: what is stored first, then the reference the checkout carried ---


def _stamp(account: Account) -> int:
    return int(account.created_at.replace(tzinfo=UTC).timestamp())


def reference(keys: Keys, account: Account) -> str:
    """What the checkout tells Stripe about the account (client_reference_id and the
    subscription's metadata): its id and signup time, signed with this installation's
    key, so neither another product on the same Stripe account nor a later account
    given a deleted one's id can be taken for it."""
    message = f"{account.id}-{_stamp(account)}"
    return f"{message}-{keys.sign(REFERENCE_PURPOSE, message)}"


def _referenced(keys: Keys, ref: str) -> tuple[bool, Account | None]:
    """(whether the reference is this installation's, the account it names if that
    account still exists)."""
    account_id, _, rest = ref.partition("-")
    stamp, _, signature = rest.partition("-")
    if not (account_id.isascii() and account_id.isdigit() and stamp.isascii() and stamp.isdigit()):
        return False, None
    if not keys.verify(REFERENCE_PURPOSE, f"{account_id}-{stamp}", signature):
        return False, None
    account = Account.get_or_none(Account.id == int(account_id))
    if account is None or _stamp(account) != int(stamp):
        return True, None
    return True, account


def _account_for(keys: Keys, event: Event, sub: Subscription | None) -> tuple[bool, Account | None]:
    """(whether the event is about one of ours, whose it is)."""
    for field, value in (
        (AccountBilling.subscription_id, sub.id if sub else event.subscription_id),
        (AccountBilling.customer_id, sub.customer if sub else event.customer_id),
    ):
        if value:
            row = AccountBilling.get_or_none(field == value)
            if row is not None:
                return True, Account.get_or_none(Account.id == row.account_id)
    ours = False
    for ref in (sub.account_ref if sub else "", event.account_ref):
        if ref:
            mine, account = _referenced(keys, ref)
            if account is not None:
                return True, account
            ours |= mine
    return ours, None


def _subscription_named(event: Event) -> str:
    if event.subscription_id:
        return event.subscription_id
    if event.customer_id:  # an event about the customer: their stored subscription
        row = AccountBilling.get_or_none(AccountBilling.customer_id == event.customer_id)
        if row is not None:
            return row.subscription_id
    return ""


def _read(provider, subscription_id: str) -> Subscription | None:
    """The subscription now; None if the provider has no such subscription."""
    try:
        return provider.subscription(subscription_id)
    except BillingError as exc:
        if not exc.missing:
            raise
        return None


def _other_runs(provider, account: Account | None, sub: Subscription) -> tuple[str, bool]:
    """(the account's stored subscription id, whether it is another one that runs):
    stored as running when ``sub`` has ended (an old one's end), and still running as
    the provider says now when ``sub`` runs too (a second checkout completed)."""
    stored = AccountBilling.get_or_none(AccountBilling.account == account) if account else None
    if stored is None:
        return "", False
    seen = stored.subscription_id
    if seen in ("", sub.id) or not _running(stored.status):
        return seen, False
    if not _running(sub.status):
        return seen, True
    other = _read(provider, seen)
    return seen, other is not None and _running(other.status)


def handle_event(instance: Instance, event: Event) -> Outcome:
    """A verified webhook: once per event id, the subscription re-read from the API (the
    payload may be older than another event already handled). BillingError when the
    provider cannot be asked: nothing is written, and the webhook answers 500 so the
    provider sends it again."""
    if BillingEvent.select().where(BillingEvent.event_id == event.id).exists():
        return Outcome("duplicate")
    provider = provider_for(instance.config)
    subscription_id = _subscription_named(event)
    fetched_at = clock.now()
    sub = _read(provider, subscription_id) if subscription_id else None
    if subscription_id and sub is None:
        log.warning("billing: event %s names a subscription Stripe does not know", event.id)
    ours, account = _account_for(instance.keys, event, sub)
    seen, other_runs = _other_runs(provider, account, sub) if sub else ("", False)
    queued = 0
    with db.write():
        db.lock(("billing-event", event.id))
        if BillingEvent.select().where(BillingEvent.event_id == event.id).exists():
            return Outcome("duplicate")
        BillingEvent.create(event_id=event.id, received_at=clock.now())
        if sub is None:
            return Outcome("ignored", account.id if account else None)
        found = _locked_row(account.id, instance.config.billing.trial_days) if account else None
        if found is None:
            if ours and sub.status not in FINAL:  # its account was deleted meanwhile
                queue_cancel(instance, sub.id)
            return Outcome("ignored")
        account, row, _ = found
        if row.subscription_id not in (seen, sub.id):  # another one stored meanwhile
            raise BillingError("the account's subscription changed meanwhile: ask again")
        known = row.subscription_id == sub.id
        if _takes(row, sub, fetched_at, other_runs):
            if row.subscription_id and not known and row.status not in FINAL:
                queue_cancel(instance, row.subscription_id)  # the one it replaces, lapsed
            _store(row, sub, fetched_at)
        elif other_runs and _running(sub.status):
            log.warning(
                "billing: account %s subscribed a second time; the second subscription "
                "is canceled, the first one runs on",
                account.slug,
            )
            queue_cancel(instance, sub.id)
        if account.status == "deleting" and not known and sub.status not in FINAL:
            queue_cancel(instance, sub.id)  # subscribed while being deleted
        queued = _queue_notices(instance, account, row, clock.now())
    if queued:
        outbox.wake()
    return Outcome("handled", account.id)


RECONCILE_JOB = "billing-reconcile"
RECONCILE_EVERY = timedelta(hours=23)


def reconcile(instance: Instance, force: bool = False) -> int:
    """The daily job: re-read every subscription that can still change, so a webhook
    that never came moves the state all the same. Returns how many changed. The
    scheduler asks every hour; it runs once a day for the installation, whichever
    process asks (``force``: now)."""
    last = JobRun.get_or_none(JobRun.job == RECONCILE_JOB)
    if not force and last is not None and clock.now() - last.finished_at < RECONCILE_EVERY:
        return 0
    provider = provider_for(instance.config)
    changed = 0
    rows = AccountBilling.select().where(
        AccountBilling.subscription_id != "", AccountBilling.status.not_in(FINAL)
    )
    for stored in list(rows):
        fetched_at = clock.now()
        try:
            sub = provider.subscription(stored.subscription_id)
        except BillingError as exc:
            log.warning("billing: could not re-read a subscription: %s", exc)
            continue
        with db.write():
            found = _locked_row(stored.account_id, instance.config.billing.trial_days)
            if found is None:  # deleted since
                continue
            account, row, _ = found
            if row.subscription_id == sub.id and _takes(row, sub, fetched_at, False):
                before = (row.status, row.period_end)
                _store(row, sub, fetched_at)
                changed += before != (row.status, row.period_end)
                _queue_notices(instance, account, row, clock.now())
    retention.record_run(RECONCILE_JOB, {"changed": changed})
    return changed


# --- the notices ------------------------------------------------------------------------

SUBJECTS = {
    "trial_7d": "Your trial ends in {days} days",
    "trial_1d": "Your trial ends tomorrow",
    "trial_ended": "Your trial has ended",
    "payment_failed": "A payment failed",
    "payment_recovered": "Your payment went through",
    "subscription_canceled": "Your subscription is canceled",
    "grace_1d": "Your grace period ends tomorrow",
    "limited": "Your dashboard is read-only now",
}


def _due(row: AccountBilling, state: ServiceState, now: datetime) -> list[tuple[str, str]]:
    """The notices this state calls for, each with its occasion: the same occasion
    never gets the same notice twice."""
    due = []
    trial_end = row.trial_ends_at.isoformat()
    if state.ended == "subscription":
        ended = f"subscription:{row.subscription_id}"
    else:
        ended = f"trial:{trial_end}"
    if state.name == "trial":
        left = row.trial_ends_at - now
        long_enough = row.trial_ends_at - row.trial_started_at > timedelta(days=7)
        if timedelta(days=1) < left <= timedelta(days=7) and long_enough:
            due.append(("trial_7d", trial_end))
        elif left <= timedelta(days=1):
            due.append(("trial_1d", trial_end))
    elif state.name in ("grace", "limited"):
        due.append(("trial_ended" if state.ended == "trial" else "subscription_canceled", ended))
        if state.name == "grace" and state.until - now <= timedelta(days=1):
            due.append(("grace_1d", ended))
        if state.name == "limited":
            due.append(("limited", ended))
    elif state.name == "past_due":
        period = row.period_end.isoformat() if row.period_end else ""
        due.append(("payment_failed", f"{row.subscription_id}:{period}"))
    elif state.name == "active":
        failed = BillingNotice.select(BillingNotice.occasion).where(
            BillingNotice.account == row.account_id,
            BillingNotice.kind == "payment_failed",
            BillingNotice.occasion.startswith(f"{row.subscription_id}:"),
        )
        due += [("payment_recovered", n.occasion) for n in failed]
    return due


def _queue_notices(instance: Instance, account: Account, row: AccountBilling, now) -> int:
    """Inside the caller's transaction, under the account's lock: queue the notices due
    and not yet sent, and record each as sent with it."""
    if account.status != "active":
        return 0
    state = service_state(row, now, instance.config.billing.grace_days)
    queued = 0
    for kind, occasion in _unsent(row, state, now):
        BillingNotice.create(account=account, kind=kind, occasion=occasion, sent_at=now)
        days = state.days_left(now) if state.until else None
        notify._queue(
            instance,
            account,
            "billing",
            SUBJECTS[kind].format(days=days),
            "billing_notice",
            notice=kind,
            state=state,
            days=days,
            until=state.until,
            trial_ends=row.trial_ends_at,
            billing_url=instance.url("/dashboard/billing"),
            local=lambda at: routing.local_time(account, at).strftime("%Y-%m-%d %H:%M"),
        )
        queued += 1
    return queued


def _unsent(row: AccountBilling, state: ServiceState, now: datetime) -> list[tuple[str, str]]:
    """The notices due and not sent yet."""
    sent = {
        (n.kind, n.occasion)
        for n in BillingNotice.select(BillingNotice.kind, BillingNotice.occasion).where(
            BillingNotice.account == row.account_id
        )
    }
    return [notice for notice in _due(row, state, now) if notice not in sent]


def _pending(instance: Instance, account: Account, now: datetime) -> bool:
    """Whether a notice is due and not sent, read without writing: most hours, for
    most accounts, nothing is, and no write transaction is opened for them."""
    options = instance.config.billing
    row = row_of(account, options.trial_days)
    return bool(_unsent(row, service_state(row, now, options.grace_days), now))


def send_notices(instance: Instance) -> int:
    """The hourly job: the reminders and notices that time alone brings (a trial's last
    week, grace ending); webhooks queue the rest as they come."""
    if not enabled(instance.config):
        return 0
    ensure_trials(instance.config)
    now = clock.now()
    queued = 0
    for account in list(Account.select().where(Account.status == "active")):
        if not _pending(instance, account, now):
            continue
        with db.write():
            found = _locked_row(account.id, instance.config.billing.trial_days)
            if found is not None:
                queued += _queue_notices(instance, found[0], found[1], now)
    if queued:
        outbox.wake()
    return queued

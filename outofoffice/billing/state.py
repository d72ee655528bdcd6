"""The one function that decides an account's service state, from what is stored.

``trial`` (the product's own, from signup), ``active`` (Stripe ``active`` or
``trialing``), ``past_due`` (full service, a banner, an email), ``grace`` (a trial or a
subscription ended: full service and a banner for ``grace_days``) and ``limited`` (the
dashboard is read-only but for billing and deletion, SMS pauses). No state stops a
caller's request: the routing page and email never ask this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from outofoffice.billing.base import ENDED, LIVE
from outofoffice.models import Account, AccountBilling, Setting

STATES = ("trial", "active", "past_due", "grace", "limited")
# The Setting that says when billing was first switched on: accounts older than that
# get their trial from then, not from a signup long past.
SINCE_SETTING = "billing_since"

LABELS = {
    "trial": "Trial",
    "active": "Active",
    "past_due": "Past due",
    "grace": "Grace period",
    "limited": "Limited",
}


@dataclass(frozen=True)
class ServiceState:
    name: str  # one of STATES
    until: datetime | None  # when this state ends by itself (a trial, grace)
    ended: str = ""  # what ended before grace or limited: "trial" or "subscription"

    @property
    def limited(self) -> bool:
        return self.name == "limited"

    def label(self) -> str:
        """What the owner reads: a canceled subscription says so."""
        if self.name in ("grace", "limited") and self.ended == "subscription":
            return f"Canceled ({LABELS[self.name].lower()})"
        return LABELS[self.name]

    def days_left(self, now: datetime) -> int | None:
        """Whole days left, counting a part day as one (a trial ending at noon
        tomorrow has 1 day left)."""
        if self.until is None:
            return None
        left = self.until - now
        return max(0, -(-left // timedelta(days=1)))


def virtual_row(account: Account, trial_days: int) -> AccountBilling:
    """The trial an account has before anything was stored for it: from its signup, or
    from when billing was switched on if that came later. Never written by a read."""
    since = Setting.get_or_none(Setting.name == SINCE_SETTING)
    start = account.created_at
    if since is not None:
        start = max(start, datetime.fromisoformat(since.value))
    return AccountBilling(
        account=account,
        trial_started_at=start,
        trial_ends_at=start + timedelta(days=trial_days),
    )


def row_of(account: Account, trial_days: int) -> AccountBilling:
    stored = AccountBilling.get_or_none(AccountBilling.account == account)
    return stored if stored is not None else virtual_row(account, trial_days)


def service_state(row: AccountBilling, now: datetime, grace_days: int) -> ServiceState:
    """What service the account gets now, by its stored trial and subscription."""
    grace = timedelta(days=grace_days)
    status = row.status
    if status in LIVE:
        return ServiceState("active", None)
    if status == "past_due":
        return ServiceState("past_due", None)
    if now < row.trial_ends_at:  # a subscription that ended inside the trial leaves it
        return ServiceState("trial", row.trial_ends_at)
    if status in ENDED:
        ended = max(row.ended_at or row.period_end or row.trial_ends_at, row.trial_ends_at)
        what = "subscription"
    else:  # no subscription (or one never paid for): the trial ran out
        ended, what = row.trial_ends_at, "trial"
    if now < ended + grace:
        return ServiceState("grace", ended + grace, what)
    return ServiceState("limited", None, what)


def state_of(account: Account, config, now: datetime) -> ServiceState:
    """The state of an account, stored or not."""
    options = config.billing
    return service_state(row_of(account, options.trial_days), now, options.grace_days)


def banner(state: ServiceState, now: datetime) -> str:
    """The line across the top of every dashboard page, or "" when all is well."""
    days = state.days_left(now)
    plural = "" if days == 1 else "s"
    if state.name == "trial":
        return f"Your free trial ends in {days} day{plural}. Subscribe to keep everything as it is."
    if state.name == "past_due":
        return "A payment failed. Update your card to keep your subscription."
    if state.name == "grace":
        what = "trial" if state.ended == "trial" else "subscription"
        return (
            f"Your {what} has ended. Everything works for {days} more day{plural}; "
            "then your dashboard becomes read-only. Callers are served either way."
        )
    if state.name == "limited":
        return (
            "Your dashboard is read-only until you subscribe. Callers are still served: "
            "their requests reach your vendors by email as usual; text messages are paused."
        )
    return ""

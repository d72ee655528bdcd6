"""Optional billing: trials the product owns, subscriptions through a provider (Stripe).

With ``[billing] provider = "none"`` nothing here runs: no page, no email, no limit.
No state of billing ever stops a caller's request (SPEC section 12)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outofoffice.billing.base import BillingProvider
    from outofoffice.config import Config


def enabled(config: Config) -> bool:
    return config.billing.provider != "none"


def sms_paused(config: Config, account) -> bool:
    """Limited mode pauses SMS (it costs the installation per message); email, and so
    every caller's request, goes on in every state."""
    if not enabled(config):
        return False
    from outofoffice import clock
    from outofoffice.billing.state import state_of

    return state_of(account, config, clock.now()).limited


def provider_for(config: Config) -> BillingProvider:
    """The provider [billing] names; only called when billing is on."""
    if config.billing.provider == "stripe":
        from outofoffice.billing.stripe import StripeBilling

        return StripeBilling(config)
    raise ValueError(f"no billing provider {config.billing.provider!r}")

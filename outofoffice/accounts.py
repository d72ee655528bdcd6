"""Accounts: signup, slug rules and holds, magic links, sessions, disable/enable.

Magic links and sessions are bearer tokens: only their sha256 is stored. A link is
consumed by a POST (mail scanners follow GET links), once, within its TTL.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zoneinfo
from datetime import timedelta
from functools import cache

from outofoffice import abuse, clock, countries, db, outbox
from outofoffice.errors import ValidationError
from outofoffice.instance import Instance
from outofoffice.keys import hash_token, new_token
from outofoffice.mail.message import is_address
from outofoffice.models import (
    Account,
    Category,
    Invite,
    MagicLink,
    OutboxMessage,
    Session,
    SlugHold,
)
from outofoffice.policy import INVITE_DAYS, NAME_MAX
from outofoffice.templating import render_email

# industry -> (label, subjects label, caller label)
INDUSTRIES: dict[str, tuple[str, str, str]] = {
    "property_management": ("Property management", "Properties", "Tenant"),
    "legal": ("Legal", "Matters", "Client"),
    "it_services": ("IT services", "Clients", "Client"),
    "home_services": ("Home services", "Customers", "Customer"),
    "other": ("Other", "Customers", "Customer"),
}

SINGULAR = {
    "Properties": "Property",
    "Matters": "Matter",
    "Clients": "Client",
    "Customers": "Customer",
}


def labels(industry: str) -> dict[str, str]:
    """The industry's words for subjects and callers (SPEC section 5)."""
    _, subjects, caller = INDUSTRIES[industry]
    return {"subjects": subjects, "subject": SINGULAR[subjects], "caller": caller}


# Seeded at signup so a new firm's routing page makes sense on day one; {emergency} is
# the emergency number of the firm's country.
DEFAULT_CATEGORIES: dict[str, list[tuple[str, str, bool]]] = {
    "property_management": [
        ("Plumbing", "Water leaking? Shut the water valve under the sink or at the main.", True),
        ("Heating", "No heat: check the thermostat and the breaker first.", True),
        (
            "Electrical",
            "Sparks or burning smell? Switch off at the breaker and call {emergency}.",
            True,
        ),
        ("Locked out", "Have your ID ready; the locksmith will ask for it.", False),
        ("Other", "", False),
    ],
    "legal": [
        ("Arrest or detention", "Say nothing to the police until you have spoken to us.", True),
        ("Urgent deadline", "Tell us the deadline and the court or office.", True),
        ("Other", "", False),
    ],
    "it_services": [
        ("Outage", "Tell us what is down and since when.", True),
        ("Security incident", "Disconnect the affected machine from the network.", True),
        ("Other", "", False),
    ],
    "home_services": [
        ("Plumbing", "Shut the water at the main valve if you can.", True),
        ("Heating and cooling", "Check the thermostat and the breaker first.", True),
        (
            "Electrical",
            "Sparks or burning smell? Switch off at the breaker and call {emergency}.",
            True,
        ),
        ("Other", "", False),
    ],
    "other": [
        ("Urgent", "If anyone is in danger, call {emergency} first.", True),
        ("Other", "", False),
    ],
}

RESERVED_SLUGS = frozenset(
    [
        "www",
        "admin",
        "administrator",
        "api",
        "app",
        "apps",
        "mail",
        "email",
        "smtp",
        "imap",
        "pop",
        "static",
        "assets",
        "media",
        "status",
        "help",
        "support",
        "docs",
        "doc",
        "blog",
        "about",
        "contact",
        "privacy",
        "terms",
        "legal",
        "security",
        "login",
        "logout",
        "signup",
        "signin",
        "register",
        "auth",
        "account",
        "accounts",
        "dashboard",
        "billing",
        "settings",
        "root",
        "dev",
        "test",
        "staging",
        "demo",
        "cdn",
        "ftp",
        "ns",
        "ns1",
        "ns2",
        "webmail",
        "healthz",
        "health",
        "metrics",
        "outofoffice",
        "r",
        "s",
        "v",
        "new",
        "null",
        "undefined",
    ]
)

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]")

JOINERS = "\u200c\u200d"  # zero-width (non-)joiners belong to some scripts and emoji

SIGNUP_FIELDS = ("email", "name", "business_name", "slug", "industry", "timezone")


class LinkError(Exception):
    """A magic link that is unknown, used, or expired (one answer for all three)."""


@cache
def timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalise_email(value: str) -> str:
    return value.strip().lower()


def text_problem(value: str, what: str, maximum: int = NAME_MAX) -> str | None:
    if not value.strip():
        return f"Enter {what}."
    if len(value) > maximum:
        return f"Use at most {maximum} characters for {what}."
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in JOINERS for c in value):
        return f"Remove control or invisible formatting characters from {what}."
    return None


def email_problem(email: str) -> str | None:
    if not is_address(email) or "." not in email.partition("@")[2]:
        return "Enter an email address such as owner@example.com."
    return None


def slug_problem(slug: str) -> str | None:
    """Why this slug cannot be taken now, or None."""
    if not SLUG.fullmatch(slug):
        return (
            "Use 3 to 40 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit."
        )
    if slug in RESERVED_SLUGS:
        return "That address is reserved; choose another."
    if Account.select().where(Account.slug == slug).exists():
        return "That address is taken; choose another."
    if SlugHold.select().where(SlugHold.slug == slug, SlugHold.expires_at > clock.now()).exists():
        return "That address was recently in use and is on hold; choose another."
    return None


def clean_signup(form: dict[str, str]) -> dict[str, str]:
    """Validated, normalised signup data; raises ValidationError with every problem."""
    data = {k: str(form.get(k, "")).strip() for k in SIGNUP_FIELDS}
    data["email"] = normalise_email(data["email"])
    data["slug"] = data["slug"].lower()
    errors: dict[str, str] = {}
    checks = {
        "email": email_problem(data["email"]),
        "name": text_problem(data["name"], "your name"),
        "business_name": text_problem(data["business_name"], "the business name"),
        "slug": slug_problem(data["slug"]),
        "industry": None if data["industry"] in INDUSTRIES else "Choose an industry.",
        "timezone": None
        if data["timezone"] in timezones()
        else "Choose a time zone such as Europe/London or America/New_York.",
    }
    errors = {k: v for k, v in checks.items() if v}
    if errors:
        raise ValidationError(errors)
    return data


def create_account(**fields: str) -> Account:
    """Create an account and seed its industry's categories (one transaction)."""
    data = clean_signup(fields)
    with db.write():
        # checked again under the locks: another process may have taken them meanwhile
        db.lock(("slug", data["slug"]), ("account-email", data["email"]))
        if problem := slug_problem(data["slug"]):
            raise ValidationError({"slug": problem})
        if Account.select().where(Account.email == data["email"]).exists():
            raise ValidationError({"email": "An account with this email already exists."})
        country = countries.of_timezone(data["timezone"])
        account = Account.create(**data, country=country)
        number = countries.emergency_numbers(country)[0]
        for position, (name, description, emergency) in enumerate(
            DEFAULT_CATEGORIES[data["industry"]]
        ):
            Category.create(
                account=account,
                name=name,
                description=description.format(emergency=number),
                emergency=emergency,
                position=position,
            )
    return account


def find(email_or_slug: str) -> Account | None:
    key = email_or_slug.strip().lower()
    return Account.get_or_none((Account.slug == key) | (Account.email == key))


def set_status(slug: str, status: str, config=None) -> Account:
    """Disable (cancel) or re-enable an account. Disabling ends its sessions at once
    and starts a slug hold, so the address cannot pass to someone else meanwhile."""
    from outofoffice import retention

    with db.write():
        db.lock(("slug", slug))  # before the row, as the deletion sweep takes them
        found = Account.get_or_none(Account.slug == slug)
        account = found and db.locked(Account, found.id)  # an owner's deletion wins
        if account is None:
            raise LookupError(f"no account with slug {slug!r}")
        if account.status == "deleting":
            raise LookupError(f"{slug} is being deleted")
        account.status = status
        account.save(only=[Account.status])
        if status != "active":
            Session.delete().where(Session.account == account).execute()
            if config is not None:
                retention.hold_slug(slug, "disabled", config)
    return account


def request_deletion(account: Account, instance: Instance) -> None:
    """The owner's (or admin's) deletion: at once the owner is signed out, the routing
    page closes and every link stops working, and a subscription is canceled (from the
    outbox); the next sweep deletes the data."""
    from outofoffice import billing

    with db.write():
        if billing.enabled(instance.config):
            from outofoffice.billing.cancellation import queue_cancellation

            queue_cancellation(instance, account)
        account.status = "deleting"
        account.deletion_requested_at = clock.now()
        account.save(only=[Account.status, Account.deletion_requested_at])
        Session.delete().where(Session.account == account).execute()
        MagicLink.delete().where(MagicLink.account == account).execute()
        OutboxMessage.delete().where(
            OutboxMessage.account == account, OutboxMessage.status == "queued"
        ).execute()


# --- magic links -----------------------------------------------------------------------


def _issue_link(instance: Instance, purpose: str, email: str, account=None, payload=None) -> str:
    token = new_token()
    now = clock.now()
    MagicLink.create(
        token_hash=hash_token(token),
        purpose=purpose,
        account=account,
        email=email,
        payload=payload,
        created_at=now,
        expires_at=now + timedelta(minutes=instance.config.retention.magic_link_minutes),
    )
    return token


def login_link(instance: Instance, account: Account) -> str:
    """A one-time sign-in URL, for the admin's CLI."""
    with db.write():
        token = _issue_link(instance, "login", account.email, account=account)
    return instance.url(f"/auth/{token}")


LINK_PURPOSE = {"login": "login", "signup": "signup", "email_change": "email"}  # template: purpose


def _send_link(
    instance: Instance,
    template: str,
    email: str,
    account: Account | None = None,
    signup: dict | None = None,
    business: str = "",
) -> None:
    """Issue a link and queue its email. Without an address (an unknown or disabled
    account) the same work is done, a link that can never sign in is stored, and
    nothing is queued: the answer's timing does not tell whether the account exists."""
    sealed = instance.keys.encrypt(json.dumps(signup)) if signup else None
    purpose = LINK_PURPOSE[template]
    token = _issue_link(instance, purpose, email, account=account, payload=sealed)
    minutes = instance.config.retention.magic_link_minutes
    text, html = render_email(
        template,
        url=instance.url(f"/auth/{token}"),
        minutes=minutes,
        operator=instance.config.operator,
        business=business,
    )
    if not email:
        return
    subject = {
        "login": f"Sign in to {instance.config.operator.name}",
        "signup": f"Confirm your new {instance.config.operator.name} account",
        "email_change": f"Confirm your new sign-in address for {business}",
    }[template]
    outbox.enqueue(
        instance.keys,
        sender=instance.sender,
        to=email,
        subject=subject,
        text=text,
        html=html,
        kind=template,
        account=account,
        lifetime=timedelta(minutes=minutes),
    )


def _send_login(instance: Instance, account: Account | None) -> None:
    if account is not None and account.status == "active":
        _send_link(instance, "login", account.email, account, business=account.business_name)
    else:
        _send_link(instance, "login", "")


def request_login(instance: Instance, email: str, ip: str = "") -> None:
    """Queue a sign-in link if the address belongs to an active account and neither
    the address nor the requester is over its hourly limit.

    The page answers the same either way and nothing is sent inside the request.
    """
    with db.write():
        account = Account.get_or_none(Account.email == normalise_email(email))
        if not abuse.may_send_sign_in(instance.config, ip, account):
            account = None  # the same work, nothing queued
        _send_login(instance, account)
    outbox.wake()


def request_signup(
    instance: Instance, form: dict[str, str], invite: str = "", ip: str = ""
) -> None:
    """Validate a signup and email a confirmation link; the account is created only
    when the link is used, so an unconfirmed signup holds no slug. The form data
    waits in the link's row, encrypted."""
    data = clean_signup(form)
    if instance.config.server.signup == "invite":
        if not _valid_invite(invite, data["email"]):
            raise ValidationError(
                {"invite": "This invitation is for another address or is no longer valid."}
            )
        data["invite"] = hash_token(invite)
    with db.write():
        existing = Account.get_or_none(Account.email == data["email"])
        if not abuse.may_send_sign_in(instance.config, ip, existing):
            _send_login(instance, None)  # over a limit: the same answer, nothing queued
        elif existing is not None:
            _send_login(instance, existing)  # same answer; the owner may just sign in
        else:
            _send_link(
                instance, "signup", data["email"], signup=data, business=data["business_name"]
            )
    outbox.wake()


def _change_email(instance: Instance, account: Account, new_email: str) -> None:
    """Switch the sign-in address: every other session and pending link of the account
    ends, and the old address is told, so a stolen session cannot keep a way in."""
    db.lock(("account-email", new_email))
    if Account.select().where(Account.email == new_email).exists():
        raise ValidationError(
            {"email": f"{new_email} belongs to another account now; choose another in settings."}
        )
    old_email, account.email = account.email, new_email
    account.save(only=[Account.email])
    Session.delete().where(Session.account == account).execute()
    MagicLink.delete().where(MagicLink.account == account, MagicLink.used_at.is_null()).execute()
    text, html = render_email(
        "email_changed",
        business=account.business_name,
        new_email=new_email,
        operator=instance.config.operator,
    )
    outbox.enqueue(
        instance.keys,
        sender=instance.sender,
        to=old_email,
        subject=f"Your sign-in address for {account.business_name} changed",
        text=text,
        html=html,
        kind="email_change",
        account=account,
    )


RECENT_SIGN_IN = timedelta(minutes=10)


def request_email_change(instance: Instance, session: Session, new_email: str, ip: str) -> str:
    """Email a confirmation link to the new address; the sign-in address changes only
    when that link is used, so nobody can move an account to an address they don't read.

    Only a session signed in within RECENT_SIGN_IN may ask: signing in again by a link
    to the current address is the re-authentication, so a stolen older session cannot
    move the account away. These emails share the sign-in emails' hourly limits."""
    account = session.account
    if session.created_at < clock.now() - RECENT_SIGN_IN:
        raise ValidationError(
            {
                "email": "To change your sign-in address, log out and sign in again first "
                "(it proves this is you), then change it within 10 minutes."
            }
        )
    new_email = normalise_email(new_email)
    if problem := email_problem(new_email):
        raise ValidationError({"email": problem})
    if new_email == account.email:
        raise ValidationError({"email": "That is your sign-in address already."})
    with db.write():
        if not abuse.may_send_sign_in(instance.config, ip, account):
            raise ValidationError(
                {
                    "email": "Too many sign-in emails went out for this account this hour. "
                    "Try again in an hour."
                }
            )
        # The same answer whether or not another account uses the address (no
        # enumeration); the link is only sent when it could work.
        if not Account.select().where(Account.email == new_email).exists():
            _send_link(instance, "email_change", new_email, account, account.business_name)
    outbox.wake()
    return new_email


def _live_link(token: str) -> MagicLink | None:
    link = MagicLink.get_or_none(MagicLink.token_hash == hash_token(token))
    if link is None or link.used_at is not None or link.expires_at <= clock.now():
        return None
    if link.purpose != "signup" and (link.account is None or link.account.status != "active"):
        return None
    return link


def peek_link(token: str) -> MagicLink:
    """The link behind a token, without consuming it (for the GET confirm page)."""
    link = _live_link(token)
    if link is None:
        raise LinkError(token)
    return link


def _signup_data(instance: Instance, link: MagicLink) -> dict:
    return json.loads(instance.keys.decrypt(link.payload))


def link_business_name(instance: Instance, link: MagicLink) -> str:
    if link.purpose == "signup":
        return _signup_data(instance, link)["business_name"]
    return link.account.business_name


def consume_link(instance: Instance, token: str) -> tuple[Account, str]:
    """Use a magic link once: create the account (signup) and start a session."""
    with db.write():
        link = _live_link(token)
        if link is None:
            raise LinkError(token)
        used = (
            MagicLink.update(used_at=clock.now(), payload=None)
            .where(MagicLink.id == link.id, MagicLink.used_at.is_null())
            .execute()
        )
        if used != 1:
            raise LinkError(token)
        if link.purpose == "signup":
            try:
                account = _create_from_signup(_signup_data(instance, link))
            except ValidationError as exc:  # taken since the form was sent
                raise ValidationError(
                    {k: f"{v} Please sign up again." for k, v in exc.errors.items()}
                ) from None
        else:
            account = link.account
        if link.purpose == "email":
            _change_email(instance, account, link.email)
        session_token = start_session(instance, account)
    return account, session_token


def _create_from_signup(payload: dict) -> Account:
    invite_hash = payload.pop("invite", None)
    if invite_hash:
        used = (
            Invite.update(used_at=clock.now())
            .where(
                Invite.token_hash == invite_hash,
                Invite.used_at.is_null(),
                Invite.expires_at > clock.now(),
            )
            .execute()
        )
        if used != 1:
            raise ValidationError({"invite": "This invitation was used already."})
    return create_account(**payload)


# --- invitations (signup = "invite") ---------------------------------------------------


def create_invite(instance: Instance, email: str = "") -> str:
    """A single-use signup URL, optionally only for one address."""
    email = normalise_email(email)
    if email and (problem := email_problem(email)):
        raise ValidationError({"email": problem})
    token = new_token()
    now = clock.now()
    with db.write():
        Invite.create(
            token_hash=hash_token(token),
            email=email,
            created_at=now,
            expires_at=now + timedelta(days=INVITE_DAYS),
        )
    return instance.url(f"/signup?invite={token}")


def _valid_invite(token: str, email: str | None = None) -> bool:
    if not token:
        return False
    invite = Invite.get_or_none(Invite.token_hash == hash_token(token))
    if invite is None or invite.used_at is not None or invite.expires_at <= clock.now():
        return False
    return not (invite.email and email is not None and invite.email != email)


def invite_is_valid(token: str) -> bool:
    return _valid_invite(token)


# --- sessions --------------------------------------------------------------------------


def start_session(instance: Instance, account: Account) -> str:
    """A fresh random token at every sign-in (no fixation); only its hash is kept."""
    token = new_token()
    now = clock.now()
    Session.create(
        token_hash=hash_token(token),
        account=account,
        created_at=now,
        expires_at=now + timedelta(days=instance.config.retention.session_days),
    )
    return token


def session_account(token: str) -> tuple[Session, Account] | None:
    if not token:
        return None
    session = (
        Session.select(Session, Account)
        .join(Account)
        .where(Session.token_hash == hash_token(token), Session.expires_at > clock.now())
        .first()
    )
    if session is None or session.account.status != "active":
        return None
    return session, session.account


def end_all_sessions(account: Account) -> int:
    """Sign out everywhere: every session ends now, and so does every unused link of
    the account (sign-in or address change), so a thief cannot come back by one."""
    with db.write():
        MagicLink.delete().where(
            MagicLink.account == account, MagicLink.used_at.is_null()
        ).execute()
        return Session.delete().where(Session.account == account).execute()


def end_session(token: str) -> None:
    with db.write():
        Session.delete().where(Session.token_hash == hash_token(token)).execute()

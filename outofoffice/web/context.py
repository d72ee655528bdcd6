"""What handlers share about the current request: the owner, CSRF, pages, redirects."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import bottle

from outofoffice import accounts, billing, clock
from outofoffice.billing.state import state_of
from outofoffice.instance import Instance
from outofoffice.keys import same
from outofoffice.templating import render

SESSION_COOKIE = "oop_session"


class UserError(bottle.HTTPError):
    """An error whose message is written for the person who sees it."""


def fail(status: int, message: str) -> UserError:
    return UserError(status, message)


def instance() -> Instance:
    return bottle.request.app.config["outofoffice.instance"]


def client_ip() -> str:
    """The socket peer, as waitress gives it: X-Forwarded-For counts only when it comes
    from [server] trusted_proxy (waitress applies it), never from bottle's own parsing."""
    return bottle.request.environ.get("REMOTE_ADDR", "")


HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def host_name(header: str) -> str:
    """The host a Host header names: lowercased, without port or trailing dot; empty
    for anything that is not a plain name or IP literal with an optional port."""
    if not HOST.fullmatch(header):
        return ""
    return (urlsplit("//" + header).hostname or "").rstrip(".")


def request_host() -> str:
    return host_name(bottle.request.environ.get("HTTP_HOST", ""))


def cookie_name() -> str:
    return ("__Host-" if instance().config.https else "") + SESSION_COOKIE


def session_cookie(token: str, max_age: int) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, Secure and __Host- under https."""
    secure = "; Secure" if instance().config.https else ""
    return f"{cookie_name()}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"


def session_token() -> str:
    return bottle.request.get_cookie(cookie_name()) or ""


def current():
    """(session, account) for the signed-in owner, or None; looked up once per request."""
    env = bottle.request.environ
    if "oop.current" not in env:
        env["oop.current"] = accounts.session_account(session_token())
    return env["oop.current"]


def owner():
    found = current()
    return found[1] if found else None


# What a firm in limited mode may still do: its billing, its deletion, and keeping the
# account safe (signing out everywhere, moving it to another address).
LIMITED_MAY_POST = (
    "/dashboard/billing/",
    "/dashboard/account/delete",
    "/dashboard/settings/sessions",
    "/dashboard/settings/email",
)
LIMITED = (
    "Your dashboard is read-only until you subscribe: see Billing. Callers are still "
    "served: their requests reach your vendors by email as usual."
)


def require_owner():
    found = owner()
    if found is None:
        if bottle.request.method == "GET":
            see_other("/login")
        raise fail(403, "Please log in again.")
    if bottle.request.method == "POST" and not bottle.request.path.startswith(LIMITED_MAY_POST):
        config = instance().config
        if billing.enabled(config) and state_of(found, config, clock.now()).limited:
            raise fail(403, LIMITED)
    return found


def csrf_token() -> str:
    found = current()
    if not found:
        return ""
    return instance().keys.sign("csrf", found[0].token_hash)


def check_csrf() -> None:
    expected = csrf_token()
    given = bottle.request.forms.get("csrf_token", "")
    if not expected or not given or not same(expected, given):
        raise fail(403, "This form has expired. Go back, reload the page and try again.")


def see_other(location: str, *set_cookies: str):
    """303 to a path on this site; a relative Location, never built from Host."""
    response = bottle.HTTPResponse(status=303)
    response.set_header("Location", location)
    for value in set_cookies:
        response.add_header("Set-Cookie", value)
    raise response


@dataclass(frozen=True)
class FirmCard:
    """What a page shows of a firm around its content, as last read."""

    slug: str
    business_name: str
    brand_colour: str
    logo_hash: str | None
    contact_phone: str
    country: str

    @classmethod
    def of(cls, account) -> FirmCard:
        return cls(
            account.slug,
            account.business_name,
            account.brand_colour,
            account.logo_hash,
            account.contact_phone,
            account.country,
        )


class FirmCards:
    """The firms whose pages this app served lately (the most recent LIMIT), so that a
    caller who meets a database restart still gets the firm's name and phone."""

    LIMIT = 10_000

    def __init__(self):
        self._cards: OrderedDict[str, FirmCard] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, card: FirmCard) -> None:
        with self._lock:
            self._cards[card.slug] = card
            self._cards.move_to_end(card.slug)
            if len(self._cards) > self.LIMIT:
                self._cards.popitem(last=False)

    def get(self, slug: str) -> FirmCard | None:
        with self._lock:
            return self._cards.get(slug)


def firm_cards() -> FirmCards:
    return bottle.request.app.config["outofoffice.firm_cards"]


def page_cache():
    return bottle.request.app.config["outofoffice.page_cache"]


def for_firm(account) -> None:
    """This request is about a firm's caller or vendor: every page it renders, error
    pages too, carries the firm's name, colour and phone instead of the operator's."""
    bottle.request.environ["oop.firm"] = account
    if account is not None and not isinstance(account, FirmCard):
        firm_cards().remember(FirmCard.of(account))


def firm_when_unreachable(slug: str) -> None:
    """The database cannot be reached: the error page still names the firm, as this
    process last saw it."""
    for_firm(firm_cards().get(slug.lower()))


def page(template: str, status: int = 200, **context) -> str:
    inst = instance()
    bottle.response.status = status
    bottle.response.content_type = "text/html; charset=utf-8"
    return render(
        template,
        operator=inst.config.operator,
        signup_mode=inst.config.server.signup,
        owner=owner(),
        csrf_token=csrf_token(),
        current_path=bottle.request.path,
        **({"analytics_id": "", "firm": bottle.request.environ.get("oop.firm")} | context),
    )

"""The WSGI application: routes, per-request database connection, CSRF, error pages,
and security headers on every response (errors and redirects included)."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

import bottle

from outofoffice import db
from outofoffice.config import Config, is_loopback
from outofoffice.instance import Instance
from outofoffice.policy import REQUEST_BODY_MAX
from outofoffice.web import (
    auth,
    billing,
    caller,
    dashboard,
    health,
    public,
    reports,
    sms,
    vendor,
    webhooks,
)
from outofoffice.web.context import (
    FirmCards,
    UserError,
    check_csrf,
    fail,
    firm_when_unreachable,
    host_name,
    page,
)
from outofoffice.web.page_cache import PageCache

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

ERROR_TEXT = {
    400: ("Bad request", "The request could not be understood. Go back and try again."),
    403: ("Not allowed", "You are not allowed to do that."),
    404: ("Not found", "There is no page at this address. Check the link for typos."),
    405: ("Not allowed", "This page does not accept that kind of request."),
    409: (
        "Not possible now",
        "That could not be done: the page was out of date. Reload it and look again.",
    ),
    410: ("Link expired", "This link does not work any more."),
    413: ("Too large", "What you sent is too large. Shorten it and try again."),
    429: ("Too many requests", "Too many requests. Wait a while and try again."),
    500: ("Something went wrong", "Something went wrong on our side. Please try again."),
    503: (
        "Briefly unavailable",
        "We cannot reach our records this moment. Try again in a minute; if it cannot "
        "wait, phone the firm.",
    ),
}


# A write the database refused: nothing changed, and saying so is the honest answer.
NOT_SAVED = "We could not save this just now, so nothing changed. Try again in a minute."
NOT_SAVED_FIRM = (
    "We could not save this just now, so nothing changed. Try again in a minute; if it "
    "cannot wait, phone the firm."
)


class App(bottle.Bottle):
    """A Bottle app whose every response, errors and redirects included, carries the
    security headers: they are added at the WSGI boundary, not per handler."""

    def __init__(self, security_headers: list[tuple[str, str]], counts):
        super().__init__()
        self.security_headers = security_headers
        self.counts = counts

    def __call__(self, environ, start_response):
        # HEAD is GET without the body: handlers that tell GET from POST (a form that
        # shows or sends, the redirect to log in) then answer it as GET does
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if head:
            environ["REQUEST_METHOD"] = "GET"

        def start(status, headers, exc_info=None):
            route = environ.get("bottle.route")
            self.counts.count(route.rule if route else "(no route)", int(status[:3]))
            present = {name.lower() for name, _ in headers}
            extra = [(k, v) for k, v in self.security_headers if k.lower() not in present]
            return start_response(status, list(headers) + extra, exc_info)

        body = self.wsgi(environ, start)
        if not head:
            return body
        if hasattr(body, "close"):
            body.close()
        return []


def _security_headers(config: Config) -> list[tuple[str, str]]:
    headers = [
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        # same-origin: no URL (with its token) leaves for another site, and browsers
        # still send a real Origin on our own forms (no-referrer makes it "null")
        ("Referrer-Policy", "same-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
        ("Cache-Control", "no-store"),
    ]
    if config.https:
        headers.append(("Strict-Transport-Security", "max-age=31536000"))
    return headers


CROSS_SITE = "This form was sent from another site. Open this site yourself and try again."
TOKEN_PATH = re.compile(r"^/(auth|v|s)/[^/]+")


def loggable(path: str) -> str:
    """A request path fit for the log: bearer tokens in it are cut out."""
    return TOKEN_PATH.sub(r"/\1/…", path)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or (443 if scheme == "https" else 80)


def make_cross_site_check(config: Config):
    """A POST from another site is refused: no one can make a visitor's browser sign in
    to an account they did not ask for, or send a form in their name. Browsers say
    where a form came from in Origin and Sec-Fetch-Site."""
    scheme, host, port = _origin(config.base_url)
    domain = config.server.domain if config.server.routing_pages == "subdomain" else ""

    def is_cross_site(origin: str | None, fetch_site: str | None) -> bool:
        if fetch_site == "cross-site":
            return True
        if origin is None:
            return False
        if origin == "null":  # privacy settings hide it; trust the browser's own verdict
            return fetch_site not in ("same-origin", "same-site", "none")
        o_scheme, o_host, o_port = _origin(origin)
        if (o_scheme, o_port) != (scheme, port):
            return True
        if o_host == host:
            return False
        return not (domain and (o_host == domain or o_host.endswith("." + domain)))

    return is_cross_site


def make_host_check(config: Config):
    """Only our own names are answered: a request for another host (a look-alike domain
    pointed here, DNS rebinding) gets 400. Path mode knows base_url's host; subdomain
    mode also <slug>.<domain> and the bare domain. A loopback base_url accepts every
    loopback name, so the admin's own browser works on either spelling."""
    own = host_name(urlsplit(config.base_url).netloc)
    domain = config.server.domain if config.server.routing_pages == "subdomain" else ""

    def is_ours(header: str) -> bool:
        host = host_name(header)
        if host == own or (is_loopback(own) and is_loopback(host)):
            return True
        return bool(domain) and (host == domain or host.endswith("." + domain))

    return is_ours


# A vendor's action link: its signed token is the authority, not a session, so a
# cross-site POST to it forges nothing; ntfy's web app presses Accept from its own origin.
ACTION_PATH = re.compile(r"/v/[^/]+")


def _needs_csrf(path: str) -> bool:
    return path == "/logout" or path == "/dashboard" or path.startswith("/dashboard/")


def _refusals_answered(callback):
    """A write the database refused (db.Unavailable), or a database that cannot be
    reached, is a 503 page, not a crash with a traceback in the log: the error page
    says it, and the log names the cause once."""

    def answered(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except Exception as exc:  # bottle would print its traceback into the log
            if db.is_away(exc):  # db.Unavailable among them
                raise bottle.HTTPError(503, "Unavailable", exc) from None
            raise

    return answered


def create_app(config: Config, instance: Instance | None = None) -> App:
    """Build the app. Without an instance it opens one; the schema must be current."""
    instance = instance or Instance.open(config)
    app = App(_security_headers(config), instance.traffic)
    is_cross_site = make_cross_site_check(config)
    is_our_host = make_host_check(config)
    wrong_host = f"This site answers only at {config.base_url}. Check the address."
    app.config["outofoffice.instance"] = instance
    app.config["outofoffice.firm_cards"] = FirmCards()
    app.config["outofoffice.page_cache"] = PageCache()

    def before_request():
        request = bottle.request
        if request.path == "/healthz":
            # any name (probes call it by address), and a database that is down is its
            # report, not an error page
            return
        try:
            db.database.connect(reuse_if_open=True)
        except Exception as exc:  # not a traceback in the log: the 503 page
            if db.is_away(exc):
                raise bottle.HTTPError(503, "Unavailable", exc) from None
            raise
        if not is_our_host(request.environ.get("HTTP_HOST", "")):
            raise fail(400, wrong_host)
        if request.content_length > REQUEST_BODY_MAX:
            raise fail(413, f"Requests are limited to {REQUEST_BODY_MAX // 1024} KiB.")
        if request.method == "POST":
            if not ACTION_PATH.fullmatch(request.path) and is_cross_site(
                request.get_header("Origin"), request.get_header("Sec-Fetch-Site")
            ):
                raise fail(403, CROSS_SITE)
            if _needs_csrf(request.path):
                check_csrf()

    def after_request():
        if not db.database.is_closed():
            db.database.close()

    app.add_hook("before_request", before_request)
    app.add_hook("after_request", after_request)
    app.install(_refusals_answered)

    def error_page(err: bottle.HTTPError):
        status = err.status_code
        request = bottle.request
        unavailable = isinstance(err.exception, db.Unavailable)
        if unavailable:
            # a write the database refused (a held lock, a full disk): reads still work
            log.warning(
                "%s %s: not saved: %s", request.method, loggable(request.path), err.exception
            )
            status = 503
        elif status >= 500 and db.is_away(err.exception):
            # the database restarts or is locked: say so, and connect afresh next time
            log.warning("database unavailable: %s", type(err.exception).__name__)
            db.drop_idle()
            bottle.request.environ["oop.current"] = None  # the page asks nothing more of it
            status = 503
            if not request.environ.get("oop.firm") and (slug := caller.routing_slug()):
                firm_when_unreachable(slug)  # as this process last saw the firm
        fallback = ERROR_TEXT[400] if status < 500 else ERROR_TEXT[500]
        title, message = ERROR_TEXT.get(status, fallback)
        if isinstance(err, UserError):
            message = err.body
        elif status == 503:
            bottle.response.set_header("Retry-After", "30")
            if unavailable:
                message = NOT_SAVED_FIRM if request.environ.get("oop.firm") else NOT_SAVED
        elif status >= 500:
            log.error("%s %s failed: %r", request.method, loggable(request.path), err.exception)
        try:
            # what the caller wrote, to send again or to read out on the phone
            posted = status == 503 and request.method == "POST"
            kept = request.forms.getunicode("description", "") if posted else ""
            return page("error.html", status=status, title=title, message=message, kept=kept)
        except Exception:  # the error page itself failed (database down): plain text
            log.exception("error page failed")
            bottle.response.content_type = "text/plain; charset=utf-8"
            return f"{title}\n\n{message}\n"
        finally:
            after_request()

    app.default_error_handler = error_page  # every status, even ones bottle makes itself

    for area in (public, health, auth, caller, vendor, dashboard, reports, sms, webhooks, billing):
        area.install(app)
    return app

"""Pages anyone may see: the landing page, the privacy policy, static files."""

from pathlib import Path

import bottle

from outofoffice.models import WebhookEndpoint
from outofoffice.web import caller
from outofoffice.web.context import fail, instance, page

STATIC = Path(__file__).resolve().parent.parent / "static"


GA_HOSTS = "https://www.googletagmanager.com https://*.google-analytics.com"
CSP_WITH_ANALYTICS = (
    f"default-src 'self'; script-src 'self' https://www.googletagmanager.com; "
    f"connect-src 'self' {GA_HOSTS} https://*.analytics.google.com; "
    f"img-src 'self' data: {GA_HOSTS}; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def analytics_id() -> str:
    """The configured analytics id for this response, or "": only on the marketing pages
    (the caller of this function decides that), never for DNT or Global Privacy Control."""
    configured = instance().config.analytics.google_analytics_id
    headers = bottle.request.headers
    if not configured or headers.get("DNT") == "1" or headers.get("Sec-GPC") == "1":
        return ""
    if caller.slug_from_host() is not None:  # a firm's own pages, even its /privacy
        return ""
    bottle.response.set_header("Content-Security-Policy", CSP_WITH_ANALYTICS)
    return configured


def third_parties() -> list[str]:
    """Who else handles data on this instance, from the live config."""
    config = instance().config
    found = []
    if config.mail.backend == "smtp":
        found.append(f"Email is handed to the mail server {config.mail.smtp.host}.")
    elif config.mail.backend == "resend":
        found.append("Email is sent through Resend (resend.com).")
    if config.sms.provider == "twilio":
        found.append(
            "Text messages are sent through Twilio (twilio.com): the vendor's phone number "
            "and the request's details, and a caller's number where the firm turned on "
            "updates by text message."
        )
    if config.push.ntfy_url:
        found.append(
            f"Push notifications to vendors go through the ntfy server {config.push.ntfy_url}."
        )
    if WebhookEndpoint.select().where(WebhookEndpoint.active == True).exists():  # noqa: E712
        found.append(
            "Firms on this instance send their own requests' details to web addresses "
            "they name (webhooks)."
        )
    if config.billing.provider == "stripe":
        found.append("Payments are handled by Stripe (stripe.com).")
    if config.analytics.google_analytics_id:
        found.append(
            "Google Analytics counts visits to the home page and this page, unless your "
            "browser sends Do Not Track or Global Privacy Control."
        )
    return found


def install(app: bottle.Bottle) -> None:
    @app.route("/", ["GET", "POST"])
    def landing():
        slug = caller.slug_from_host()
        if slug is not None:
            return caller.routing_page(slug)
        if bottle.request.method == "POST":
            raise fail(405, "This page does not accept that kind of request.")
        return page("index.html", analytics_id=analytics_id())

    @app.get("/privacy")
    def privacy():
        return page(
            "privacy.html",
            retention=instance().config.retention,
            texts_callers=instance().config.sms.provider != "none",
            third_parties=third_parties(),
            analytics_id=analytics_id(),
        )

    @app.get("/static/<path:path>")
    def static(path):
        return _static(path)

    @app.get("/favicon.ico")
    def favicon():
        # browsers ask for it whatever the page says; the SVG answers, in one request
        return _static("favicon.svg")


def _static(path: str):
    response = bottle.static_file(path, root=str(STATIC))
    if response.status_code == 200:
        response.set_header("Cache-Control", "public, max-age=86400")
    return response

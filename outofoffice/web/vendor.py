"""Action links: GET shows the request and one confirm button; POST acts."""

import logging

import bottle

from outofoffice import db, dispatch, timeline
from outofoffice.web.context import for_firm, instance, page

log = logging.getLogger(__name__)

DONE = {
    "accept": "Thank you: you accepted this request. The caller is expecting your call.",
    "decline": "Thank you: the request goes to the next person on the list.",
    "resolve": "Thank you: the request is marked resolved.",
}
ALREADY = {
    "accept": "You had already accepted this request; nothing changed.",
    "resolve": "This request was already marked resolved; nothing changed.",
}
TITLES = {404: "This link does not work", 409: "No longer with you", 410: "This link expired"}


def _view(link: dispatch.ActionLink, token: str, done: str = "") -> str:
    d = link.dispatch
    for_firm(d.account)
    if not link.current:  # passed on or closed: the caller's details are not yours now
        if done:
            return page("vendor_done.html", d=d, done=done)
        return _refused(dispatch.ActionError(link.moved_on(), 409, d.account))
    # the step after accepting sits on the same page: one tap when the job is done
    next_token = ""
    if d.status == "accepted" and link.action != "resolve":
        next_token = dispatch.action_token(instance(), d, link.vendor, "resolve", link.expires)
    return page(
        "vendor_action.html",
        d=d,
        link=link,
        token=token,
        caller=dispatch.caller(instance(), d),
        subject=dispatch.subject_text(d),
        address=d.subject.address if d.subject_id else "",
        state=timeline.vendor_state(d),
        received=timeline.when(d.account, d.created_at),
        button=dispatch.ACTIONS[link.action],
        can_act=d.status in dispatch.WAITING
        or (d.status == "accepted" and link.action == "resolve"),
        next_token=next_token,
        done=done,
    )


def _refused(exc: dispatch.ActionError) -> str:
    if exc.account is not None:
        for_firm(exc.account)
    return page(
        "vendor_refused.html",
        status=exc.status,
        title=TITLES.get(exc.status, "This link cannot be used"),
        message=str(exc),
    )


def _not_recorded(token: str) -> str:
    """The database refused the write: nothing changed, and the same button again."""
    try:
        link = dispatch.read_action(instance(), token)
    except dispatch.ActionError as exc:
        return _refused(exc)
    for_firm(link.dispatch.account)
    bottle.response.set_header("Retry-After", "30")
    return page(
        "vendor_unavailable.html",
        status=503,
        d=link.dispatch,
        token=token,
        button=dispatch.ACTIONS[link.action],
        secondary=link.action == "decline",
    )


def _let_ntfy_read_the_answer() -> None:
    """ntfy's web app presses Accept with fetch() from its own origin: without this it
    cannot see the 200 and tells the vendor the press failed. Only the configured ntfy
    server's origin, only on this POST; the page says nothing its token does not show."""
    ntfy = instance().config.push.ntfy_url
    origin = bottle.request.get_header("Origin", "")
    if ntfy and origin and origin == ntfy.rstrip("/"):
        bottle.response.set_header("Access-Control-Allow-Origin", origin)
        bottle.response.set_header("Vary", "Origin")


def install(app: bottle.Bottle) -> None:
    @app.get("/v/<token>")
    def confirm(token):
        try:
            link = dispatch.read_action(instance(), token)
        except dispatch.ActionError as exc:
            return _refused(exc)
        return _view(link, token)

    @app.post("/v/<token>")
    def act(token):
        _let_ntfy_read_the_answer()
        try:
            link, changed = dispatch.act(instance(), token)
        except dispatch.ActionError as exc:
            return _refused(exc)
        except db.Unavailable as exc:
            log.warning("a vendor's answer was not recorded: %s", exc)
            return _not_recorded(token)
        message = DONE[link.action] if changed else ALREADY.get(link.action, "Nothing changed.")
        return _view(link, token, done=message)

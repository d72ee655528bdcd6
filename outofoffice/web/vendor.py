"""Action links: GET shows the request and one confirm button; POST acts."""

import bottle

from outofoffice import dispatch
from outofoffice.web.context import fail, instance, page

DONE = {
    "accept": "Thank you: you have accepted this request. The caller is expecting you.",
    "decline": "Thank you: the request goes to the next person on the list.",
    "resolve": "Thank you: the request is marked resolved.",
}
ALREADY = {
    "accept": "You had already accepted this request; nothing changed.",
    "resolve": "This request was already marked resolved; nothing changed.",
}


GONE = "This request is no longer with you. Thank you; nothing more is needed."


def _view(link: dispatch.ActionLink, done: str = "", **context) -> str:
    d = link.dispatch
    if not link.current:  # passed on or closed: the caller's details are not yours now
        if done:
            return page("vendor_done.html", d=d, done=done)
        raise fail(409, GONE)
    return page(
        "vendor_action.html",
        d=d,
        link=link,
        caller=dispatch.caller(instance(), d),
        subject=dispatch.subject_text(d),
        button=dispatch.ACTIONS[link.action],
        done=done,
        **context,
    )


def install(app: bottle.Bottle) -> None:
    @app.get("/v/<token>")
    def confirm(token):
        try:
            link = dispatch.read_action(instance(), token)
        except dispatch.ActionError as exc:
            raise fail(exc.status, str(exc)) from None
        return _view(link, token=token, done="")

    @app.post("/v/<token>")
    def act(token):
        try:
            link, changed = dispatch.act(instance(), token)
        except dispatch.ActionError as exc:
            raise fail(exc.status, str(exc)) from None
        message = DONE[link.action] if changed else ALREADY.get(link.action, "Nothing changed.")
        return _view(link, token=token, done=message)

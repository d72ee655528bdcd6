"""Signup, login, the magic-link confirm page, logout."""

import bottle

from outofoffice import accounts
from outofoffice.web.context import (
    client_ip,
    current,
    fail,
    instance,
    page,
    see_other,
    session_cookie,
    session_token,
)

LINK_GONE = (
    "This sign-in link has expired or was already used. Links work once, for "
    "{minutes} minutes. Ask for a new one on the log-in page."
)


def _signup_closed_message() -> str:
    inst = instance()
    contact = inst.config.operator.contact_email
    if inst.config.server.signup == "closed":
        return f"This instance is not taking new accounts. Ask {contact} for one."
    return f"Sign-up is by invitation. Ask {contact} for an invitation link."


def _signup_page(form, errors, invite="", status=200, closed=""):
    return page(
        "signup.html",
        status=status,
        form=form,
        errors=errors,
        invite=invite,
        closed=closed,
        industries=accounts.INDUSTRIES,
        timezones=sorted(accounts.timezones()),
        routing_example=instance().routing_url("your-firm"),
    )


def _blank(fields):
    return dict.fromkeys(fields, "")


def install(app: bottle.Bottle) -> None:
    @app.get("/signup")
    def signup_form():
        mode = instance().config.server.signup
        invite = bottle.request.query.getunicode("invite", "") or ""
        if mode == "closed" or (mode == "invite" and not accounts.invite_is_valid(invite)):
            return _signup_page({}, {}, closed=_signup_closed_message())
        return _signup_page(_blank(accounts.SIGNUP_FIELDS), {}, invite=invite)

    @app.post("/signup")
    def signup():
        inst = instance()
        if inst.config.server.signup == "closed":
            return _signup_page({}, {}, status=403, closed=_signup_closed_message())
        form = {k: bottle.request.forms.getunicode(k, "") or "" for k in accounts.SIGNUP_FIELDS}
        invite = bottle.request.forms.getunicode("invite", "") or ""
        try:
            accounts.request_signup(inst, form, invite=invite, ip=client_ip())
        except accounts.ValidationError as exc:
            if "invite" in exc.errors and inst.config.server.signup == "invite":
                return _signup_page({}, {}, status=403, closed=exc.errors["invite"])
            return _signup_page(form, exc.errors, invite=invite, status=400)
        return page(
            "check_email.html",
            email=accounts.normalise_email(form["email"]),
            signup=True,
            minutes=inst.config.retention.magic_link_minutes,
        )

    @app.get("/login")
    def login_form():
        return page("login.html", form={"email": ""}, errors={})

    @app.post("/login")
    def login():
        inst = instance()
        email = accounts.normalise_email(bottle.request.forms.getunicode("email", "") or "")
        if problem := accounts.email_problem(email):
            return page("login.html", status=400, form={"email": email}, errors={"email": problem})
        accounts.request_login(inst, email, client_ip())
        return page(
            "check_email.html",
            email=email,
            signup=False,
            minutes=inst.config.retention.magic_link_minutes,
        )

    def _gone():
        minutes = instance().config.retention.magic_link_minutes
        return fail(410, LINK_GONE.format(minutes=minutes))

    @app.get("/auth/<token>")
    def auth_confirm(token):
        try:
            link = accounts.peek_link(token)
        except accounts.LinkError:
            raise _gone() from None
        return page(
            "auth_confirm.html",
            token=token,
            signup=link.purpose == "signup",
            new_email=link.email if link.purpose == "email" else "",
            business=accounts.link_business_name(instance(), link),
        )

    @app.post("/auth/<token>")
    def auth_consume(token):
        inst = instance()
        try:
            _account, session = accounts.consume_link(inst, token)
        except accounts.LinkError:
            raise _gone() from None
        except accounts.ValidationError as exc:
            raise fail(409, " ".join(exc.errors.values())) from None
        if current():
            accounts.end_session(session_token())
        max_age = inst.config.retention.session_days * 86400
        see_other("/dashboard", session_cookie(session, max_age))

    @app.post("/logout")
    def logout():
        accounts.end_session(session_token())
        see_other("/", session_cookie("", 0))

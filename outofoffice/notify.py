"""Which emails the owner gets, and when: per dispatch (``every``), on failures
(``failures``; also with ``every`` and ``digest``), a daily ``digest`` at a local hour,
or ``none``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from outofoffice import clock, events, outbox, routing
from outofoffice.models import Account, Dispatch, OutboxMessage
from outofoffice.templating import render_email

if TYPE_CHECKING:
    from outofoffice.instance import Instance

OWNER_KINDS = ("owner", "alert", "digest")
NOTIFY = ("every", "failures", "digest", "none")


def _queue(
    instance: Instance,
    account: Account,
    kind: str,
    subject: str,
    template: str,
    dispatch: Dispatch | None = None,
    **context,
) -> None:
    text, html = render_email(
        template,
        account=account,
        operator=instance.config.operator,
        dashboard=instance.url("/dashboard"),
        dispatch_url=instance.url(f"/dashboard/dispatches/{dispatch.id}") if dispatch else "",
        dispatch=dispatch,
        **context,
    )
    outbox.enqueue(
        instance.keys,
        sender=instance.sender,
        to=account.email,
        subject=subject,
        text=text,
        html=html,
        kind=kind,
        account=account,
        dispatch=dispatch,
    )
    if dispatch is not None:
        events.event(dispatch, "owner_notified", detail=subject)


def _where(d: Dispatch) -> str:
    return " at ".join(p for p in (d.category_label or "Request", d.subject_label) if p)


def _notice(instance: Instance, d: Dispatch, subject: str, headline: str, caller: dict) -> None:
    """A per-dispatch notice, for owners who want to hear about every request."""
    if d.account.notify == "every":
        _queue(
            instance,
            d.account,
            "owner",
            subject,
            "owner_dispatch",
            dispatch=d,
            headline=headline,
            caller=caller,
        )


def new_dispatch(instance: Instance, d: Dispatch, caller: dict) -> None:
    _notice(
        instance, d, f"New request {d.reference}: {_where(d)}", "A new request came in.", caller
    )


def accepted(instance: Instance, d: Dispatch, caller: dict) -> None:
    name = d.vendor.name
    _notice(
        instance, d, f"Accepted by {name}: {d.reference}", f"{name} accepted this request.", caller
    )


def alert(instance: Instance, d: Dispatch, problem: str, caller: dict) -> None:
    """Something needs the owner: nobody was paged, or nobody accepted."""
    account = d.account
    if account.notify == "none":
        return
    _queue(
        instance,
        account,
        "alert",
        f"Needs you: {d.reference} ({_where(d)})",
        "owner_alert",
        dispatch=d,
        problem=problem,
        caller=caller,
    )


def dead_letter(instance: Instance, row: OutboxMessage, caller: dict | None = None) -> None:
    """An email could not be delivered in its lifetime: the owner should know."""
    account = Account.get_or_none(Account.id == row.account_id)
    if account is None or account.notify == "none":
        return
    problem = f"An email to {row.recipient} could not be delivered: {row.last_error or 'gave up'}."
    dispatch = Dispatch.get_or_none(Dispatch.id == row.dispatch_id) if row.dispatch_id else None
    _queue(
        instance,
        account,
        "alert",
        f"Email not delivered to {row.recipient}",
        "owner_alert",
        dispatch=dispatch,
        problem=problem,
        caller=caller,
    )


def send_digests(instance: Instance) -> int:
    """Queue the daily digest for each account whose local digest hour it is now."""
    now = clock.now()
    sent = 0
    for account in Account.select().where(Account.notify == "digest", Account.status == "active"):
        if routing.local_time(account, now).hour != account.digest_hour:
            continue
        already = (
            OutboxMessage.select()
            .where(
                OutboxMessage.account == account,
                OutboxMessage.kind == "digest",
                OutboxMessage.created_at > now - timedelta(hours=20),
            )
            .exists()
        )
        if already:
            continue
        dispatches = list(
            Dispatch.select()
            .where(Dispatch.account == account, Dispatch.created_at > now - timedelta(days=1))
            .order_by(Dispatch.created_at)
        )
        _queue(
            instance,
            account,
            "digest",
            f"Your day: {len(dispatches)} request{'s' * (len(dispatches) != 1)}",
            "digest",
            dispatches=dispatches,
            local=lambda at, a=account: routing.local_time(a, at).strftime("%a %H:%M"),
        )
        sent += 1
    if sent:
        outbox.wake()
    return sent

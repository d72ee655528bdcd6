"""What is happening to a dispatch, in the words its owner, caller and vendor read.

The stored status is the export's vocabulary (SPEC section 8); people need more: who
has it, who is next and when. Times are in the firm's timezone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from outofoffice import clock, routing
from outofoffice.dispatch import NEEDS_OFFICE, WAITING
from outofoffice.models import Account, Dispatch, DispatchEvent, Vendor

# The owner's timeline: every kind the product records, in plain words.
EVENT_WORDS = {
    "submitted": "Request received",
    "routed": "Route chosen",
    "unrouted": "No route matches: nobody was asked",
    "email_queued": "Email to the vendor queued",
    "email_sent": "Email to the vendor sent",
    "email_failed": "Email could not be delivered",
    "sms_queued": "SMS queued",
    "sms_sent": "SMS sent",
    "sms_failed": "SMS could not be delivered",
    "push_queued": "Push notification queued",
    "push_sent": "Push notification sent",
    "push_failed": "Push notification could not be delivered",
    "webhook_failed": "A webhook could not be delivered",
    "accepted": "Accepted",
    "declined": "Declined",
    "escalated": "Passed on: no answer in time",
    "unassigned": "Nobody accepted",
    "resolved": "Marked resolved",
    "reassigned": "Reassigned by you",
    "closed": "Closed",
    "repeat": "The caller sent it again",
    "owner_notified": "You were emailed",
}

WITH_VENDOR = {
    "routed": "Route chosen; {name} asked first",
    "email_queued": "Email to {name} queued",
    "email_sent": "Email to {name} sent",
    "email_failed": "Email to {name} could not be delivered",
    "sms_queued": "SMS to {name} queued",
    "sms_sent": "SMS to {name} sent",
    "sms_failed": "SMS to {name} could not be delivered",
    "push_queued": "Push notification to {name} queued",
    "push_sent": "Push notification to {name} sent",
    "push_failed": "Push notification to {name} could not be delivered",
    "accepted": "Accepted by {name}",
    "declined": "Declined by {name}",
    "escalated": "No answer in time; passed to {name}",
    "reassigned": "Reassigned by you to {name}",
    "resolved": "Marked resolved by {name}",
}

# (tone, word): the tone picks the colour, the word says what is going on.
TONES = {
    "open": ("waiting", "Received"),
    "sent": ("waiting", "Waiting"),
    "declined": ("waiting", "Waiting"),
    "escalated": ("waiting", "Waiting"),
    "accepted": ("active", "Accepted"),
    "unassigned": ("needs", "Unassigned"),
    "failed": ("needs", "Failed"),
    "resolved": ("done", "Resolved"),
    "closed": ("closed", "Closed"),
}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def when(account: Account, at: datetime | None, seconds: bool = False) -> str:
    """A time as the firm reads it: the clock alone today, with the day otherwise."""
    if at is None:
        return ""
    local = routing.local_time(account, at)
    today = routing.local_time(account, clock.now()).date()
    clock_text = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    if local.date() == today:
        return clock_text
    return f"{local:%a} {local.day} {local:%b} {clock_text}"


def first_name(vendor: Vendor) -> str:
    return (vendor.name.split() or [vendor.name])[0]


def vendor_words(vendor: Vendor | None) -> str:
    """ "Dale of North Side Plumbing": how a caller is told who has their request."""
    if vendor is None:
        return "The person on call"
    return f"{first_name(vendor)} of {vendor.company}" if vendor.company else first_name(vendor)


@dataclass(frozen=True)
class Status:
    tone: str  # waiting | active | needs | done | closed
    word: str  # one word for a badge
    line: str  # what is going on, for the owner


def status(d: Dispatch) -> Status:
    """ "Waiting on Dale, 2nd of 2, escalates 13:24": the owner's line for a dispatch."""
    tone, word = TONES.get(d.status, ("closed", d.status))
    vendor = d.vendor if d.vendor_id else None
    account = d.account
    if d.status in WAITING and vendor is not None:
        parts = [f"Waiting on {vendor.name}", f"{ordinal(d.chain_position + 1)} of {len(d.chain)}"]
        if d.escalate_at:
            last = d.chain_position + 1 >= len(d.chain)
            verb = "gives up" if last else "escalates"
            parts.append(f"{verb} {when(account, d.escalate_at)}")
        return Status(tone, word, ", ".join(parts))
    if d.status == "accepted":
        return Status(tone, word, f"Accepted by {vendor.name}" if vendor else "Accepted")
    if d.status == "unassigned":
        return Status(tone, word, "Nobody accepted: it needs you")
    if d.status == "failed":
        return Status(tone, word, "Could not be sent: it needs you")
    if d.status == "resolved":
        return Status(tone, word, f"Resolved by {vendor.name}" if vendor else "Resolved")
    return Status(tone, word, word)


def owner_line(event: DispatchEvent) -> str:
    """One timeline row for the owner: the plain words, with the vendor's name."""
    name = event.vendor.name if event.vendor_id and event.vendor else ""
    if name and event.kind in WITH_VENDOR:
        return WITH_VENDOR[event.kind].format(name=name)
    return EVENT_WORDS.get(event.kind, event.kind.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Step:
    at: str
    text: str


# The caller's timeline in fixed words; a sent email and the accept are worded below.
CALLER_WORDS = {
    "submitted": "We received your request",
    "declined": "The person asked could not take it",
    "escalated": "No answer in time",
    "reassigned": "The office passed it to someone else",
    "unassigned": "Nobody could take it yet; the office has been told",
    "unrouted": "The office has been told and will arrange someone",
    "repeat": "You sent it again; it was joined to this request",
    "resolved": "Marked resolved",
    "closed": "The office closed this request",
}


REACHED = ("sms_sent", "push_sent")  # a vendor's, not the caller's own SMS


def caller_steps(d: Dispatch, events: list[DispatchEvent]) -> list[Step]:
    """The caller's timeline: what they would want to know, none of the machinery.
    Only the vendor who accepted is named (they will call): a stranger who sends a
    request learns nothing of who else the firm works with."""
    steps = []
    asked = set()
    for e in events:
        text = CALLER_WORDS.get(e.kind)
        reached = e.kind == "email_sent" or (e.kind in REACHED and e.vendor_id)
        if reached and e.vendor_id not in asked:
            asked.add(e.vendor_id)
            text = "Sent to the person on call" if len(asked) == 1 else "Sent to the next person"
        elif e.kind == "accepted":
            text = f"{vendor_words(e.vendor if e.vendor_id else None)} accepted and will call you"
        if text:
            steps.append(Step(when(d.account, e.at), text))
    return steps


def caller_headline(d: Dispatch, events: list[DispatchEvent]) -> str:
    """The one sentence at the top of the caller's status page."""
    account = d.account
    if d.status == "accepted":
        at = next((e.at for e in reversed(events) if e.kind == "accepted"), None)
        who = vendor_words(d.vendor if d.vendor_id else None)
        return f"{who} accepted at {when(account, at)} and will call you."
    if d.status == "resolved":
        return "This request is resolved."
    if d.status == "closed":
        return "The office has closed this request."
    if d.status in NEEDS_OFFICE:
        return "We could not reach anyone yet. The office has been told."
    minutes = account.escalate_after_minutes
    return (
        "We are waiting for the person on call to answer. If they do not within "
        f"{minutes} minutes, we ask the next one."
    )


def is_settled(d: Dispatch) -> bool:
    """Nothing more will happen by itself: the caller's page stops refreshing."""
    return d.status in ("resolved", "closed")


def vendor_state(d: Dispatch) -> str:
    """Where the request stands, for the vendor it is with."""
    if d.status in WAITING:
        if d.escalate_at:
            return (
                "Waiting for your answer. Without one it goes to the next person at "
                f"{when(d.account, d.escalate_at)}."
            )
        return "Waiting for your answer."
    if d.status == "accepted":
        return "You accepted it. When the job is done, mark it resolved."
    if d.status == "resolved":
        return "Resolved. Thank you."
    return "The office has this request now."

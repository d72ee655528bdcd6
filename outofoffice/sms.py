"""Text messages: the words of every SMS, and what a vendor's reply or a provider's
delivery report does (SPEC section 11). The same for every provider; the web handlers
check the provider's signature, then call in here.

Each SMS is cut to two segments: 306 GSM-7 characters, or 134 UTF-16 units as soon as
one character is outside GSM-7. What is cut is the description first, then the other
free text; never the reference or the words to reply.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from outofoffice import clock, db, dispatch, outbox
from outofoffice.instance import Instance
from outofoffice.models import Account, Dispatch, OutboxMessage, SmsReply, Vendor

log = logging.getLogger(__name__)

# GSM 03.38: the basic set (one septet each) and the extension table (two: escape and
# the character). Anything else makes the whole message UCS-2.
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€\f")
GSM_LIMIT = 306  # two segments of 153 septets
UCS2_LIMIT = 134  # two segments of 67 UTF-16 units
CUT = "..."  # "…" is not in GSM-7: it alone would halve the room

REPLY_WORDS = "Reply YES to accept, NO to decline, DONE when resolved."
ACTION_OF = {"YES": "accept", "NO": "decline", "DONE": "resolve"}
# Twilio's own keywords (opt-out, opt-in, help): Twilio answers them, we stay silent.
# YES is one of its opt-in words too, but Twilio passes it on and it is our accept.
PROVIDER_WORDS = {
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "START",
    "UNSTOP",
    "HELP",
    "INFO",
}
REFERENCE = re.compile(r"[A-Z0-9]{3}-[A-Z0-9]{4,8}")
REPLY = re.compile(r"([A-Za-z]+)[.!]*(?:\s+#?([A-Za-z0-9]{3}-[A-Za-z0-9]{4,8})[.!]*)?")
OPEN_ROWS = ("queued", "sent")
LISTED = 4  # open references named in one answer
FAILED_STATUSES = ("undelivered", "failed")


# --- length ---------------------------------------------------------------------------


def is_gsm(text: str) -> bool:
    return all(c in GSM_BASIC or c in GSM_EXTENDED for c in text)


def fits(text: str) -> bool:
    """Does the text go in two segments?"""
    if is_gsm(text):
        return sum(2 if c in GSM_EXTENDED else 1 for c in text) <= GSM_LIMIT
    return len(text.encode("utf-16-le")) // 2 <= UCS2_LIMIT


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, keep: int) -> str:
    if keep >= len(text):
        return text
    if keep <= 0:
        return ""
    return text[:keep].rstrip(" ,.;:-") + CUT


def fit(parts: list[str], cuttable: list[int]) -> str:
    """Join the parts, cutting those named in ``cuttable`` (in that order, each only
    as far as needed) until the whole fits two segments. Whether a shorter part fits
    only ever gets truer, so the longest that fits is found by bisection."""
    parts = list(parts)
    for index in cuttable:
        if fits("".join(parts)):
            break
        whole = parts[index]
        low, high = 0, len(whole)  # parts[index] cut to ``low`` characters fits
        while low < high:
            middle = (low + high + 1) // 2
            trial = parts[:index] + [_cut(whole, middle)] + parts[index + 1 :]
            if fits("".join(trial)):
                low = middle
            else:
                high = middle - 1
        parts[index] = _cut(whole, low)
    return re.sub(r" {2,}", " ", "".join(parts)).strip()


# --- phones ---------------------------------------------------------------------------


PHONE_CHARACTERS = re.compile(r"[0-9 ()./-]+")


def e164(phone: str) -> str | None:
    """ "+1 (555) 010-0199" -> "+15550100199"; None unless the number starts with its
    country code (+ or 00) and has 7 to 15 digits: a text needs the whole number."""
    phone = (phone or "").strip()
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not phone.startswith("+") or not PHONE_CHARACTERS.fullmatch(phone[1:]):
        return None
    digits = "".join(c for c in phone if c.isdigit())
    if not 7 <= len(digits) <= 15 or digits[0] == "0":
        return None
    return "+" + digits


# --- the words ------------------------------------------------------------------------


def offer_text(instance: Instance, d: Dispatch, vendor: Vendor) -> str:
    """The offer to a vendor: only what the dispatch needs (SPEC section 3)."""
    account = d.account
    caller = dispatch.caller(instance, d)
    urgent = "URGENT " if d.category_id and d.category.emergency else ""
    category = _one_line(d.category_label or "Request")
    subject = _one_line(dispatch.subject_text(d))
    parts = [
        _one_line(account.business_name),
        f": {urgent}",
        category,
        f" at {subject}" if subject else "",
        ". Caller ",
        _one_line(caller["name"]),
        f", {_one_line(caller['phone'])}. ",
        _one_line(caller["description"]),
        f" Ref {d.reference}. {REPLY_WORDS}",
    ]
    # the description first, then the address, the caller's name, the firm, the category
    return fit(parts, [7, 3, 5, 0, 2])


def caller_confirmation_text(instance: Instance, d: Dispatch, status_url: str) -> str:
    """At once, to a caller of a firm that sends callers SMS: the reference, where to
    follow it, and the firm's phone for what cannot wait."""
    account = d.account
    phone = _one_line(account.contact_phone)
    parts = [
        _one_line(account.business_name),
        f" has your request {d.reference}. Follow it at {status_url}",
        f" Urgent? Phone {phone}." if phone else "",
    ]
    return fit(parts, [0])


def caller_accepted_text(d: Dispatch, vendor: Vendor) -> str:
    """ "Dale of North Side Plumbing accepted and will call you": the caller learns the
    name of the one who will call, no one else's."""
    from outofoffice.timeline import vendor_words  # timeline imports dispatch

    parts = [
        _one_line(vendor_words(vendor)),
        f" accepted and will call you. Request {d.reference}, ",
        _one_line(d.account.business_name),
        ".",
    ]
    return fit(parts, [2, 0])


def caller_resolved_text(d: Dispatch) -> str:
    parts = [
        f"Your request {d.reference} with ",
        _one_line(d.account.business_name),
        " is marked resolved. Thank you.",
    ]
    return fit(parts, [1])


# --- replies --------------------------------------------------------------------------


@dataclass
class Offer:
    """A request offered to one of the sender's vendors by SMS."""

    dispatch: Dispatch
    vendor: Vendor

    @property
    def reference(self) -> str:
        return self.dispatch.reference

    def open_for(self, action: str) -> bool:
        """Still waiting for this vendor's answer (accept, decline), or accepted by
        them and not yet resolved (resolve)."""
        d = self.dispatch
        if d.vendor_id != self.vendor.id:
            return False
        return d.status == "accepted" if action == "resolve" else d.status in dispatch.WAITING


def vendors_of_phone(phone: str) -> list[Vendor]:
    """Every vendor of an active firm whose phone is this number: one person may be a
    vendor of several firms. Phones are free text, so they are compared normalised."""
    candidates = (
        Vendor.select(Vendor)
        .join(Account)
        .where(Vendor.phone != "", Account.status == "active")
        .order_by(Vendor.id)
    )
    return [v for v in candidates if e164(v.phone) == phone]


def offers_by_sms(vendors: list[Vendor]) -> list[Offer]:
    """The requests offered to these vendors by SMS, most recent offer first, one entry
    per request; each only with its own firm's vendor (tenant isolation)."""
    if not vendors:
        return []
    by_id = {v.id: v for v in vendors}
    rows = (
        OutboxMessage.select(OutboxMessage, Dispatch)
        .join(Dispatch, on=(OutboxMessage.dispatch == Dispatch.id))
        .where(
            OutboxMessage.channel == "sms",
            OutboxMessage.kind == "vendor",
            OutboxMessage.status.in_(OPEN_ROWS),
            OutboxMessage.vendor.in_(list(by_id)),
        )
        .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    )
    seen: set[int] = set()
    offers = []
    for row in rows:
        vendor = by_id[row.vendor_id]
        d = row.dispatch
        if d.id in seen or d.account_id != vendor.account_id:
            continue
        seen.add(d.id)
        offers.append(Offer(d, vendor))
    return offers


def _which(word: str, offers: list[Offer], action: str, prefix: str = "") -> str:
    refs = [o.reference for o in offers if o.open_for(action)][:LISTED]
    choices = " or ".join(f"{word} {ref}" for ref in refs)
    return f"{prefix}Which request? Reply {choices}."


def _others_open(offers: list[Offer], done_id: int) -> str:
    """After an answer: the requests still waiting for this phone's, briefly."""
    waiting = [o.reference for o in offers if o.dispatch.id != done_id and o.open_for("accept")][
        :LISTED
    ]
    if not waiting:
        return ""
    return f" Still waiting for your answer: {', '.join(waiting)} (reply YES or NO with it)."


def _help(offers: list[Offer]) -> str:
    example = next((o.reference for o in offers if o.open_for("accept")), "")
    named = f" (YES {example})" if example else ""
    return f"{REPLY_WORDS} Add the reference when you have more than one request{named}."


def _act(instance: Instance, offer: Offer, action: str) -> str:
    """Through the same domain function as the signed links in the email."""
    d, vendor = offer.dispatch, offer.vendor
    token = dispatch.action_token(instance, d, vendor, action)
    try:
        link, changed = dispatch.act(instance, token)
    except dispatch.ActionError as exc:
        return f"{d.reference}: {exc}"
    d = link.dispatch
    if not changed:
        if action == "accept":
            return f"You had already accepted {d.reference}; nothing changed."
        return f"{d.reference} was already marked resolved; nothing changed."
    if action == "accept":
        caller = dispatch.caller(instance, d)
        return (
            f"Accepted {d.reference}. The caller, {_one_line(caller['name'])}, is on "
            f"{_one_line(caller['phone'])}, expecting your call. Reply DONE {d.reference} "
            "when resolved."
        )
    if action == "decline":
        return f"Declined {d.reference}: it goes to the next person."
    return f"Marked {d.reference} resolved. Thank you."


def handle_inbound(instance: Instance, message_sid: str, from_number: str, body: str) -> str:
    """A vendor's text as the provider hands it over, with its id (Twilio's
    MessageSid): handled once. The id is recorded in the transaction that acts, and the
    unique index decides between two processes hearing it at once; a text heard before
    (Twilio retrying, or a captured one replayed: the signature carries no time) acts
    no more, and is answered without the caller's details."""
    sid = (message_sid or "").strip()
    if not sid or len(sid) > 64:
        log.info("sms: a text without a usable message id; not handled")
        return ""
    acted: list[Dispatch] = []
    with db.write():
        first = SmsReply.insert(message_sid=sid, received_at=clock.now()).on_conflict_ignore()
        if db.database.execute_sql(*first.sql()).rowcount == 1:
            answer = _reply(instance, from_number, body, acted)
            if acted:
                SmsReply.update(dispatch=acted[0].id).where(SmsReply.message_sid == sid).execute()
        else:
            answer = None
    if answer is not None:
        outbox.wake()  # after the commit: what the action queued is there to send
        return answer
    before = SmsReply.get_or_none(SmsReply.message_sid == sid)
    log.info("sms: a text heard before (its message id); not acted on again")
    if before is None or before.dispatch_id is None:
        return ""
    reference = Dispatch.get_by_id(before.dispatch_id).reference
    return f"Your text about {reference} was answered already; nothing changed."


def _reply(instance: Instance, from_number: str, body: str, acted: list[Dispatch]) -> str:
    """A text from a phone: YES / NO / DONE, with or without a reference, acts on a
    request offered to that phone's vendor by SMS, as the signed link would; the answer
    to text back ("" for none: Twilio's own keywords, and numbers of no vendor). A bare
    word acts on the most recent offer, unless the requests it could mean are of more
    than one firm: then the answer lists them."""
    text = (body or "").strip()
    if text.split()[:1] and text.split()[0].strip(".!").upper() in PROVIDER_WORDS:
        return ""
    phone = e164(from_number)
    vendors = vendors_of_phone(phone) if phone else []
    if not vendors:  # a stranger learns nothing, and is not worth a paid answer
        log.info("sms: a text from a number of no vendor; not answered")
        return ""
    offers = offers_by_sms(vendors)
    matched = REPLY.fullmatch(text)
    word = matched.group(1).upper() if matched else ""
    if word not in ACTION_OF:
        return _help(offers)
    action = ACTION_OF[word]
    reference = (matched.group(2) or "").upper()
    if reference:
        offer = next((o for o in offers if o.reference == reference), None)
        if offer is None:
            if any(o.open_for(action) for o in offers):
                return _which(word, offers, action, f"{reference} is not one of your requests. ")
            return f"{reference} is not one of your requests, and none waits for {word}."
    else:
        if not offers:
            return "No request is waiting for your answer."
        firms = {o.dispatch.account_id for o in offers if o.open_for(action)}
        if len(firms) > 1:  # another firm could otherwise catch a YES with a newer offer
            return _which(word, offers, action)
        offer = offers[0]  # within one firm: the most recent offer sent to this phone
        if not offer.open_for(action) and firms:
            return _which(word, offers, action)
    acted.append(offer.dispatch)
    answer = _act(instance, offer, action)
    return answer + _others_open(offers_by_sms(vendors), offer.dispatch.id)


# --- delivery reports -----------------------------------------------------------------


def record_delivery_report(
    instance: Instance, provider_id: str, status: str, error_code: str = ""
) -> bool:
    """The provider says an SMS it took never arrived: the row is dead, the history
    says so (``sms_failed``) and a vendor who cannot be reached by any other message of
    the offer is passed on, as after a dead email (DispatchHooks decides). Any other
    status, an unknown id or a report heard before changes nothing."""
    if status not in FAILED_STATUSES or not provider_id:
        return False
    code = "".join(c for c in (error_code or "") if c.isalnum())[:16]
    reason = f"Twilio: {status}" + (f" ({code})" if code else "")
    with db.write():
        row = (
            OutboxMessage.select()
            .where(
                OutboxMessage.provider_id == provider_id[:64],
                OutboxMessage.channel == "sms",
                OutboxMessage.status == "sent",
            )
            .first()
        )
        if row is None:
            return False
        changed = (
            OutboxMessage.update(status="dead", last_error=reason)
            .where(OutboxMessage.id == row.id, OutboxMessage.status == "sent")
            .execute()
        )
        if changed != 1:  # another report won the race
            return False
        row.status = "dead"
        row.last_error = reason
        dispatch.DispatchHooks(instance).failed(row, reason, dead=True)
    log.info("sms: message #%d was not delivered: %s", row.id, reason)
    outbox.wake()
    return True

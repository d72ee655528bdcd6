"""SMS through Twilio: the offer a vendor reads, replies by text that act as the
signed links do, and delivery reports that turn an undelivered SMS into sms_failed.

Twilio is stood in for by a local HTTP server speaking its documented contract
(tests/twilio_standin.py); the webhooks are posted to the app signed as Twilio signs
them, with a signature written there from Twilio's documentation.
"""

from __future__ import annotations

import base64
import logging
import threading
from datetime import timedelta

import pytest

from outofoffice import clock, config, db, dispatch, owner_setup, retention, sms
from outofoffice.channels.sms.twilio import TwilioSms, without_numbers
from outofoffice.instance import Instance
from outofoffice.models import (
    Account,
    Category,
    Dispatch,
    DispatchEvent,
    OutboxMessage,
    SmsReply,
    Vendor,
)
from outofoffice.web.sms import twiml
from tests import twilio_standin as tw
from tests.conftest import deliver, dump_database, request_form
from tests.smtp_sink import SMTPSink

VERA_PHONE = "+1 555 0101"  # as the owner typed it
VERA = "+15550101"  # as Twilio writes it


@pytest.fixture
def twilio():
    standin = tw.TwilioStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def instance(make_instance, twilio):
    """Every test here runs on an installation that sends SMS through the stand-in."""
    return make_instance(**tw.config_sections(twilio))


@pytest.fixture
def texting(firm):
    """Vera, Alpha's first plumber, is reached by email and SMS."""
    Vendor.update(channels=["email", "sms"], phone=VERA_PHONE).where(
        Vendor.id == firm["vera"].id
    ).execute()
    firm["vera"] = Vendor.get_by_id(firm["vera"].id)
    return firm


def submit(instance, firm, **form) -> Dispatch:
    sub = dispatch.submit(instance, firm["account"], request_form(firm, **form))
    return Dispatch.get_by_id(sub.dispatch.id)


def reply(app, instance, from_number: str, body: str, **kwargs):
    url = instance.url("/sms/twilio/inbound")
    return tw.post_signed(app, url, tw.inbound_params(from_number, body), **kwargs)


def answer_of(response) -> str:
    """The text Twilio would send back, from the TwiML."""
    message = response.xml.find("Message")
    return message.text if message is not None else ""


def kinds(d: Dispatch) -> list[str]:
    return [
        e.kind
        for e in DispatchEvent.select()
        .where(DispatchEvent.dispatch == d.id)
        .order_by(DispatchEvent.id)
    ]


def fresh(d: Dispatch) -> Dispatch:
    return Dispatch.get_by_id(d.id)


# --- sending --------------------------------------------------------------------------


def test_it_sends_the_vendors_sms_through_twilio_with_the_right_fields_and_auth(
    instance, texting, twilio
):
    d = submit(instance, texting)
    deliver(instance)
    assert len(twilio.messages) == 1
    sent = twilio.messages[0]
    assert sent["To"] == VERA and sent["From"] == tw.FROM_NUMBER
    assert sent["StatusCallback"] == "http://oop.example.test/sms/twilio/status"
    assert sent["Body"] == sms.offer_text(instance, fresh(d), texting["vera"])
    assert f"Ref {d.reference}." in sent["Body"]
    assert (
        "Tina Tenant, +1 555 0199" in sent["Body"] and "Pipe burst under the sink" in sent["Body"]
    )
    assert sent["Body"].endswith("Reply YES to accept, NO to decline, DONE when resolved.")
    credentials = base64.b64encode(f"{tw.ACCOUNT_SID}:{tw.AUTH_TOKEN}".encode()).decode()
    assert sent["Authorization"] == f"Basic {credentials}"
    row = OutboxMessage.get(OutboxMessage.channel == "sms")
    assert row.status == "sent" and row.provider_id == sent["sid"] and row.last_status == 201
    assert row.body_text == ""  # not kept once delivered
    assert "sms_sent" in kinds(d)


def test_it_waits_as_twilio_asks_after_429_and_retries_after_500(instance, texting, twilio):
    submit(instance, texting)
    twilio.answer_next("429", retry_after=30)
    deliver(instance)
    row = OutboxMessage.get(OutboxMessage.channel == "sms")
    assert row.status == "queued" and row.last_status == 429
    assert "Twilio 429 20429" in row.last_error
    assert row.next_attempt_at >= clock.now() + timedelta(seconds=29)
    twilio.answer_next("500")
    clock.advance(timedelta(seconds=31))
    deliver(instance)
    row = OutboxMessage.get_by_id(row.id)
    assert row.status == "queued" and row.last_status == 500 and row.attempts == 2
    clock.advance(timedelta(seconds=30))
    deliver(instance)
    row = OutboxMessage.get_by_id(row.id)
    assert row.status == "sent" and row.provider_id == twilio.messages[0]["sid"]
    assert len(twilio.messages) == 1


def test_it_dead_letters_an_sms_twilio_refuses_as_an_invalid_number(instance, texting, twilio):
    d = submit(instance, texting)
    twilio.answer_next("21211")
    deliver(instance)
    row = OutboxMessage.get(OutboxMessage.channel == "sms")
    assert row.status == "dead" and row.attempts == 1 and row.last_status == 400
    assert row.last_error == (
        "Twilio 400 21211: The 'To' number <number> is not a valid phone number."
    )
    failed = DispatchEvent.get(DispatchEvent.dispatch == d.id, DispatchEvent.kind == "sms_failed")
    assert "21211" in failed.detail
    assert fresh(d).vendor_id == texting["vera"].id  # the email reached her: she may answer


def test_a_callers_number_in_twilios_refusal_is_stored_and_logged_nowhere(
    instance, firm, twilio, caplog
):
    """Twilio's 21211 names the number it refused; a caller's number is never at rest
    in the clear, so the reason is kept with <number> in its place (SPEC section 3)."""
    caplog.set_level(logging.DEBUG, logger="outofoffice")
    Account.update(caller_sms=True).where(Account.id == firm["account"].id).execute()
    firm["account"] = Account.get_by_id(firm["account"].id)
    d = submit(instance, firm)  # Tina Tenant, +1 555 0199
    twilio.answer_next("21211")
    deliver(instance)
    row = OutboxMessage.get(OutboxMessage.channel == "sms", OutboxMessage.kind == "caller")
    words = "Twilio 400 21211: The 'To' number <number> is not a valid phone number."
    assert row.status == "dead" and row.last_status == 400 and row.last_error == words
    failed = DispatchEvent.get(DispatchEvent.dispatch == d.id, DispatchEvent.kind == "sms_failed")
    assert failed.detail == f"to the caller: {words}"
    stored = dump_database()
    for written in ("+15550199", "5550199", "555 0199"):
        assert written not in stored and written not in caplog.text


@pytest.mark.no_database
def test_a_number_in_any_of_twilios_words_is_replaced():
    assert without_numbers("The 'To' number +1 (555) 010-0199 is not valid.") == (
        "The 'To' number <number> is not valid."
    )
    assert without_numbers("Unsubscribed 0044.20.7946.0958, 15550101") == (
        "Unsubscribed <number>, <number>"
    )
    assert without_numbers("Error 21612 on attempt 3") == "Error 21612 on attempt 3"


@pytest.mark.no_database
def test_an_sms_shows_neither_its_number_nor_its_text_in_a_traceback():
    from outofoffice.channels.sms.base import Sms

    shown = repr(Sms(to="+15550101", body="Pipe burst"))
    assert "5550101" not in shown and "Pipe" not in shown


def test_it_never_puts_the_auth_token_in_what_it_says(instance, twilio, tmp_path):
    wrong = config.from_mapping(
        {
            "storage": {"data_dir": str(tmp_path / "other")},
            "sms": {
                "provider": "twilio",
                "twilio": {
                    "account_sid": tw.ACCOUNT_SID,
                    "auth_token": "not-the-token",
                    "from_number": tw.FROM_NUMBER,
                    "api_url": twilio.url,
                },
            },
        }
    )
    sender = TwilioSms(wrong)
    with pytest.raises(Exception) as refused:
        sender.send(sender.compose(_row("+15550101", "secret words", instance), instance.keys))
    assert str(refused.value) == "Twilio 401 20003: Authenticate"
    assert refused.value.permanent
    assert "not-the-token" not in repr(refused.value) and "secret words" not in repr(refused.value)
    assert sender.describe() == f"twilio ({twilio.url}, from {tw.FROM_NUMBER})"


def _row(to: str, body: str, instance: Instance) -> OutboxMessage:
    return OutboxMessage(recipient=instance.keys.encrypt(to), body_text=instance.keys.encrypt(body))


def test_it_says_in_check_what_config_alone_shows_is_wrong(instance):
    problems = instance.deliverers["sms"].problems()
    assert problems == []  # oop.example.test is reachable, as far as config can tell
    local = config.from_mapping(
        {
            "server": {"base_url": "http://127.0.0.1:8080"},
            "sms": {
                "provider": "twilio",
                "twilio": {
                    "account_sid": tw.ACCOUNT_SID,
                    "auth_token": tw.AUTH_TOKEN,
                    "messaging_service_sid": "MG" + "a" * 32,
                },
            },
        }
    )
    sender = TwilioSms(local)
    assert sender.problems() == [
        "[server] base_url (http://127.0.0.1:8080) is on this machine: Twilio cannot reach "
        "/sms/twilio/inbound (vendors' replies) or /sms/twilio/status (delivery reports)"
    ]
    assert (
        sender.describe() == f"twilio (https://api.twilio.com, from messaging service MG{'a' * 32})"
    )
    assert sender.form(sms_message("+15550101"))["MessagingServiceSid"] == "MG" + "a" * 32


def sms_message(to: str):
    from outofoffice.channels.sms.base import Sms

    return Sms(to=to, body="hello")


# --- the words ------------------------------------------------------------------------


def test_it_fits_the_offer_in_two_segments_however_long_the_description(instance, texting):
    long = ("Water everywhere, the pipe under the sink burst. " * 82)[:4000]
    d = submit(instance, texting, description=long)
    text = sms.offer_text(instance, fresh(d), texting["vera"])
    assert sms.is_gsm(text) and 290 <= len(text) <= 306 and sms.fits(text)
    assert "Caller Tina Tenant, +1 555 0199. Water everywhere, the pipe" in text
    assert "burst..." in text or "sink..." in text  # the description is cut, and says so
    assert f"Ref {d.reference}. Reply YES to accept, NO to decline, DONE when resolved." in text


def test_it_fits_an_offer_outside_gsm_in_two_shorter_segments(instance, texting):
    long = ("Вода повсюду, труба под раковиной лопнула. " * 95)[:4000]
    d = submit(instance, texting, name="Зоя Иванова", description=long)
    text = sms.offer_text(instance, fresh(d), texting["vera"])
    assert not sms.is_gsm(text) and len(text) <= 134 and sms.fits(text)
    assert "Caller Зоя" in text and ", +1 555 0199." in text  # the phone is never cut
    assert text.endswith(
        f"Ref {d.reference}. Reply YES to accept, NO to decline, DONE when resolved."
    )


def test_it_cuts_the_other_words_when_they_alone_are_too_long(instance, texting):
    long_name = "Ж" + "Alpha Properties and Sons " * 4
    Account.update(business_name=long_name[:100]).where(
        Account.id == texting["account"].id
    ).execute()
    d = submit(instance, texting, name="Tina " + "Tenant" * 10)
    text = sms.offer_text(instance, fresh(d), texting["vera"])
    assert sms.fits(text) and d.reference in text and text.endswith("DONE when resolved.")


def test_it_marks_an_emergency_urgent(instance, texting):
    d = submit(instance, texting)
    text = sms.offer_text(instance, fresh(d), texting["vera"])
    assert text.startswith("Alpha Properties: URGENT Plumbing at Elm Street, 12 Elm St. Caller")
    Category.update(emergency=False).where(Category.id == texting["plumbing"].id).execute()
    text = sms.offer_text(instance, fresh(d), texting["vera"])
    assert text.startswith("Alpha Properties: Plumbing at Elm Street, 12 Elm St. Caller")


def test_it_words_the_callers_texts(instance, texting):
    d = submit(instance, texting)
    Account.update(contact_phone="+1 555 0100").where(Account.id == texting["account"].id).execute()
    d = fresh(d)
    url = "http://oop.example.test/s/abc"
    assert sms.caller_confirmation_text(instance, d, url) == (
        f"Alpha Properties has your request {d.reference}. Follow it at {url} "
        "Urgent? Phone +1 555 0100."
    )
    Vendor.update(company="North Side Plumbing").where(Vendor.id == texting["vera"].id).execute()
    vera = Vendor.get_by_id(texting["vera"].id)
    assert sms.caller_accepted_text(d, vera) == (
        f"Vera of North Side Plumbing accepted and will call you. Request {d.reference}, "
        "Alpha Properties."
    )
    assert sms.caller_resolved_text(d) == (
        f"Your request {d.reference} with Alpha Properties is marked resolved. Thank you."
    )


@pytest.mark.no_database
@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+1 (555) 010-0199", "+15550100199"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+44.20.7946.0958", "+442079460958"),
        ("555 0199", None),
        ("+1 555", None),
        ("+1234567890123456", None),
        ("+1 555 0199 ext 2", None),
        ("", None),
    ],
)
def test_it_writes_phones_as_twilio_does(phone, expected):
    assert sms.e164(phone) == expected


@pytest.mark.no_database
def test_it_escapes_its_answers_in_twiml():
    assert twiml("Reply <YES> & go") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Reply &lt;YES&gt; &amp; go'
        "</Message></Response>"
    )
    assert twiml("") == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


# --- replies --------------------------------------------------------------------------


def test_it_accepts_on_a_signed_yes_once(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    response = reply(app, instance, VERA, "yes")
    assert response.status_int == 200 and response.content_type == "text/xml"
    assert answer_of(response) == (
        f"Accepted {d.reference}. The caller, Tina Tenant, is on +1 555 0199, expecting "
        f"your call. Reply DONE {d.reference} when resolved."
    )
    assert fresh(d).status == "accepted" and kinds(d).count("accepted") == 1
    again = reply(app, instance, VERA, f"YES {d.reference}")
    assert answer_of(again) == f"You had already accepted {d.reference}; nothing changed."
    assert kinds(d).count("accepted") == 1


@pytest.mark.parametrize("signature", ["", "wrong", "forged"])
def test_it_refuses_a_reply_without_twilios_signature_and_changes_nothing(
    app, instance, texting, signature
):
    d = submit(instance, texting)
    deliver(instance)
    if signature == "forged":  # signed with another token
        signature = tw.twilio_signature(
            "another-token", instance.url("/sms/twilio/inbound"), tw.inbound_params(VERA, "YES")
        )
    response = reply(app, instance, VERA, "YES", signature=signature or "")
    assert response.status_int == 403
    assert fresh(d).status == "sent" and "accepted" not in kinds(d)


def test_it_refuses_a_reply_signed_for_another_url(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    params = tw.inbound_params(VERA, "YES")
    signature = tw.twilio_signature(
        tw.AUTH_TOKEN, "http://elsewhere.example/sms/twilio/inbound", params
    )
    response = tw.post_signed(app, instance.url("/sms/twilio/inbound"), params, signature=signature)
    assert response.status_int == 403 and fresh(d).status == "sent"


def test_it_refuses_replies_while_sms_is_off(make_instance, tmp_path):
    from tests.conftest import client

    plain = make_instance()
    app = client(plain)
    response = reply(app, plain, VERA, "YES")
    assert response.status_int == 403


def test_it_passes_on_after_no_and_resolves_after_done(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    assert answer_of(reply(app, instance, VERA, "No.")) == (
        f"Declined {d.reference}: it goes to the next person."
    )
    d = fresh(d)
    assert d.status == "declined" and d.vendor_id == texting["walt"].id
    # Walt now; then Vera is given it again by the owner, and accepts and finishes it
    with db.connection():
        dispatch.reassign(instance, texting["account"], d, str(texting["vera"].id))
    deliver(instance)
    reply(app, instance, VERA, "YES")
    assert answer_of(reply(app, instance, VERA, "done")) == (
        f"Marked {d.reference} resolved. Thank you."
    )
    assert fresh(d).status == "resolved" and kinds(d).count("resolved") == 1


def test_it_explains_a_no_after_accepting(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    reply(app, instance, VERA, "YES")
    answer = answer_of(reply(app, instance, VERA, "NO"))
    assert answer == (
        f"{d.reference}: You accepted this request. If you cannot do it, phone the office."
    )
    assert fresh(d).status == "accepted"


def test_it_answers_anything_else_with_help_and_leaves_twilios_words_to_twilio(
    app, instance, texting
):
    d = submit(instance, texting)
    deliver(instance)
    answer = answer_of(reply(app, instance, VERA, "yes please, on my way"))
    assert answer == (
        "Reply YES to accept, NO to decline, DONE when resolved. Add the reference when "
        f"you have more than one request (YES {d.reference})."
    )
    for word in ("STOP", "start", "HELP"):
        response = reply(app, instance, VERA, word)
        assert response.status_int == 200 and answer_of(response) == ""
    assert fresh(d).status == "sent"


def test_it_does_nothing_for_a_number_of_no_vendor(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    response = reply(app, instance, "+15550199", "YES")
    assert response.status_int == 200 and answer_of(response) == ""
    response = reply(app, instance, "+15550199", f"YES {d.reference}")
    assert answer_of(response) == "" and fresh(d).status == "sent"


@pytest.fixture
def two_firms(texting, owners, instance):
    """Vera's phone is also the phone of Beta's vendor Vee: one person, two firms."""
    _, beta = owners
    vee = owner_setup.save(
        beta,
        owner_setup.KINDS["vendors"],
        {"name": "Vee Plumb", "email": "vee@plumb.example", "phone": "+1-555-0101"},
    )
    Vendor.update(channels=["email", "sms"]).where(Vendor.id == vee.id).execute()
    category = Category.get(Category.account == beta, Category.position == 0)
    owner_setup.create_route(beta, "", "", "always", [str(vee.id)])
    beta_form = {
        "category": str(category.id),
        "name": "Bill Client",
        "phone": "+1 555 0177",
        "description": "Locked out of the office",
    }
    return {"alpha": texting, "beta": beta, "vee": Vendor.get_by_id(vee.id), "beta_form": beta_form}


def beta_request(instance, two_firms) -> Dispatch:
    sub = dispatch.submit(instance, two_firms["beta"], two_firms["beta_form"])
    return fresh(sub.dispatch)


def test_a_bare_yes_goes_to_the_most_recent_offer_of_one_firm(app, instance, texting):
    older = submit(instance, texting)
    clock.advance(timedelta(seconds=5))
    newer = submit(instance, texting, phone="+1 555 0177", name="Bill Client")
    deliver(instance)
    answer = answer_of(reply(app, instance, VERA, "YES"))
    assert answer.startswith(f"Accepted {newer.reference}. The caller, Bill Client,")
    assert answer.endswith(
        f"Still waiting for your answer: {older.reference} (reply YES or NO with it)."
    )
    assert fresh(newer).status == "accepted" and fresh(older).status == "sent"
    # the most recent is taken now: a bare YES asks which
    assert answer_of(reply(app, instance, VERA, "YES")) == (
        f"Which request? Reply YES {older.reference}."
    )
    assert fresh(older).status == "sent"


def test_a_bare_yes_asks_which_when_the_phones_requests_are_of_two_firms(app, instance, two_firms):
    """Beta gave its vendor Vera's phone and sent itself a newer request: a bare YES
    must not go to it, as it would by the most-recent rule; it asks which."""
    alpha = submit(instance, two_firms["alpha"])
    clock.advance(timedelta(seconds=5))
    beta = beta_request(instance, two_firms)
    deliver(instance)
    for word in ("YES", "no"):
        assert answer_of(reply(app, instance, VERA, word)) == (
            f"Which request? Reply {word.upper()} {beta.reference} or "
            f"{word.upper()} {alpha.reference}."
        )
    assert fresh(alpha).status == "sent" and fresh(beta).status == "sent"
    assert "accepted" not in kinds(alpha) + kinds(beta)
    answer = answer_of(reply(app, instance, VERA, f"yes {alpha.reference.lower()}"))
    assert answer.startswith(f"Accepted {alpha.reference}. The caller, Tina Tenant,")
    assert answer.endswith(
        f"Still waiting for your answer: {beta.reference} (reply YES or NO with it)."
    )
    assert (
        fresh(alpha).status == "accepted"
        and fresh(alpha).vendor_id == two_firms["alpha"]["vera"].id
    )
    # one firm's request is open now: a bare YES goes to it, a bare DONE to Alpha's
    assert answer_of(reply(app, instance, VERA, "YES")).startswith(f"Accepted {beta.reference}.")
    assert fresh(beta).vendor_id == two_firms["vee"].id
    assert answer_of(reply(app, instance, VERA, "DONE")) == (
        f"Which request? Reply DONE {beta.reference} or DONE {alpha.reference}."
    )
    assert fresh(alpha).status == "accepted" and fresh(beta).status == "accepted"


def test_a_named_reference_goes_to_the_right_firm_and_another_firms_is_refused(
    app, instance, two_firms, owners
):
    alpha = submit(instance, two_firms["alpha"])
    clock.advance(timedelta(seconds=5))
    beta = beta_request(instance, two_firms)
    deliver(instance)
    answer = answer_of(reply(app, instance, VERA, f"YES {alpha.reference}"))
    assert answer.startswith(f"Accepted {alpha.reference}.")
    assert fresh(alpha).status == "accepted" and fresh(beta).status == "sent"
    # a request of a firm this phone is no vendor of: Beta's, offered to someone else
    other = Vendor.create(
        account=owners[1], name="Otto", email="otto@example.test", phone="+15550142"
    )
    Dispatch.update(vendor=other).where(Dispatch.id == beta.id).execute()
    outsider = dispatch.submit(
        instance, two_firms["beta"], two_firms["beta_form"] | {"phone": "+1 555 0178"}
    )
    Dispatch.update(vendor=other).where(Dispatch.id == outsider.dispatch.id).execute()
    # ... and never texted to this phone (Otto is asked by email alone)
    OutboxMessage.delete().where(
        OutboxMessage.dispatch == outsider.dispatch.id, OutboxMessage.channel == "sms"
    ).execute()
    answer = answer_of(reply(app, instance, VERA, f"YES {outsider.dispatch.reference}"))
    assert (
        answer
        == f"{outsider.dispatch.reference} is not one of your requests, and none waits for YES."
    )
    assert fresh(outsider.dispatch).status == "sent" and "accepted" not in kinds(outsider.dispatch)


def test_an_unknown_reference_is_answered_with_the_open_ones(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    answer = answer_of(reply(app, instance, VERA, "YES ALP-ZZZZ"))
    assert (
        answer == f"ALP-ZZZZ is not one of your requests. Which request? Reply YES {d.reference}."
    )
    assert fresh(d).status == "sent"


def post_text(app, instance, params: dict[str, str]):
    return tw.post_signed(app, instance.url("/sms/twilio/inbound"), params)


def test_a_text_heard_again_acts_no_more(app, instance, texting):
    """A captured, correctly signed YES posted again later (or Twilio retrying it: the
    same MessageSid) must not act on whatever request is offered by then."""
    first = submit(instance, texting)
    deliver(instance)
    yes = tw.inbound_params(VERA, "YES")
    assert answer_of(post_text(app, instance, yes)).startswith(f"Accepted {first.reference}.")
    reply(app, instance, VERA, "DONE")
    clock.advance(timedelta(minutes=5))
    second = submit(instance, texting, phone="+1 555 0177", name="Bill Client")
    deliver(instance)
    for _ in range(2):
        response = post_text(app, instance, yes)
        assert response.status_int == 200
        assert answer_of(response) == (
            f"Your text about {first.reference} was answered already; nothing changed."
        )
    assert fresh(second).status == "sent" and "accepted" not in kinds(second)
    assert kinds(first).count("accepted") == 1 and fresh(first).status == "resolved"
    # a text that did nothing, heard again, gets no answer at all
    hello = tw.inbound_params(VERA, "hello")
    assert answer_of(post_text(app, instance, hello)).startswith("Reply YES to accept")
    assert answer_of(post_text(app, instance, hello)) == ""
    # the record names the message and the request, nothing of the caller or the text
    stored = [line for line in dump_database().splitlines() if line.startswith("sms_reply:")]
    assert len(stored) == 3 and all("YES" not in line and "5550" not in line for line in stored)


def test_a_text_without_a_message_id_is_not_acted_on(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    params = tw.inbound_params(VERA, "YES")
    for name in ("MessageSid", "SmsSid", "SmsMessageSid"):
        del params[name]
    response = post_text(app, instance, params)
    assert response.status_int == 200 and answer_of(response) == ""
    assert fresh(d).status == "sent"


def test_one_text_heard_by_two_processes_at_once_acts_once(instance, texting):
    """Twilio retrying while the first try is still running: on PostgreSQL two
    processes; the unique index on the message id lets one act."""
    d = submit(instance, texting)
    deliver(instance)
    sid = "SM" + "7" * 32
    start = threading.Barrier(2)
    answers: list[str] = []

    def hear() -> None:
        with db.connection():
            start.wait()
            answers.append(sms.handle_inbound(instance, sid, VERA, "YES"))

    threads = [threading.Thread(target=hear) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 2
    assert sum(a.startswith(f"Accepted {d.reference}.") for a in answers) == 1
    assert f"Your text about {d.reference} was answered already; nothing changed." in answers
    assert kinds(d).count("accepted") == 1


def test_the_record_of_texts_heard_is_swept_after_30_days(app, instance, texting):
    submit(instance, texting)
    deliver(instance)
    reply(app, instance, VERA, "YES")
    clock.advance(timedelta(days=29))
    reply(app, instance, VERA, "DONE")
    with db.connection():
        assert retention.sweep_all(instance.config)["SMS replies"] == 0
        clock.advance(timedelta(days=1, seconds=1))
        assert retention.sweep_all(instance.config)["SMS replies"] == 1
        assert SmsReply.select().count() == 1  # the DONE's, 29 days younger


def test_a_firm_that_is_disabled_takes_no_replies(app, instance, texting):
    d = submit(instance, texting)
    deliver(instance)
    Account.update(status="disabled").where(Account.id == texting["account"].id).execute()
    assert answer_of(reply(app, instance, VERA, "YES")) == ""
    assert fresh(d).status == "sent"


# --- delivery reports -----------------------------------------------------------------


def report(app, instance, sid: str, status: str, error_code: str = "", **kwargs):
    url = instance.url("/sms/twilio/status")
    return tw.post_signed(app, url, tw.status_params(sid, status, error_code, VERA), **kwargs)


def test_an_undelivered_report_records_sms_failed_once(app, instance, texting, twilio):
    d = submit(instance, texting)
    deliver(instance)
    sid = twilio.messages[0]["sid"]
    assert report(app, instance, sid, "sent").status_int == 204
    assert report(app, instance, sid, "delivered").status_int == 204
    assert OutboxMessage.get(OutboxMessage.channel == "sms").status == "sent"
    assert report(app, instance, sid, "undelivered", "30003").status_int == 204
    row = OutboxMessage.get(OutboxMessage.channel == "sms")
    assert row.status == "dead" and row.last_error == "Twilio: undelivered (30003)"
    failed = DispatchEvent.select().where(
        DispatchEvent.dispatch == d.id, DispatchEvent.kind == "sms_failed"
    )
    assert [e.detail for e in failed] == [f"to {VERA}: Twilio: undelivered (30003)"]
    report(app, instance, sid, "undelivered", "30003")
    assert kinds(d).count("sms_failed") == 1
    # the email reached her: she may still answer by it, the silence timer decides
    assert fresh(d).vendor_id == texting["vera"].id and fresh(d).status == "sent"


def test_a_report_without_twilios_signature_changes_nothing(app, instance, texting, twilio):
    d = submit(instance, texting)
    deliver(instance)
    sid = twilio.messages[0]["sid"]
    assert report(app, instance, sid, "failed", "30008", signature="bogus").status_int == 403
    assert report(app, instance, sid, "failed", "30008", signature="").status_int == 403
    assert OutboxMessage.get(OutboxMessage.channel == "sms").status == "sent"
    assert "sms_failed" not in kinds(d)


def test_an_undelivered_sms_to_a_vendor_no_other_message_reached_passes_on(
    app, instance, texting, twilio
):
    d = submit(instance, texting)
    with SMTPSink() as sink:  # Vera's mailbox does not exist
        sink.refuse = "550 No such mailbox"
        deliver(through_smtp(instance, sink))
    assert OutboxMessage.get(OutboxMessage.recipient == "vera@plumb.example").status == "dead"
    assert fresh(d).vendor_id == texting["vera"].id  # the SMS was still on its way
    deliver(instance)
    report(app, instance, twilio.messages[0]["sid"], "failed", "30006")
    d = fresh(d)
    assert d.vendor_id == texting["walt"].id and d.status == "escalated"
    escalated = DispatchEvent.get(DispatchEvent.dispatch == d.id, DispatchEvent.kind == "escalated")
    assert "the SMS to the vendor could not be delivered" in escalated.detail


def through_smtp(instance, sink) -> Instance:
    """The same installation (database, keys), its email going to ``sink``."""
    settings = {"host": "127.0.0.1", "port": sink.port, "security": "none"}
    data = {"storage": {"data_dir": str(instance.config.data_dir)}}
    data["mail"] = {"backend": "smtp", "smtp": settings}
    return Instance(config=config.from_mapping(data), keys=instance.keys)


def test_a_bare_done_asks_which_when_the_latest_offer_is_not_the_accepted_one(
    app, instance, two_firms
):
    alpha = submit(instance, two_firms["alpha"])
    deliver(instance)
    reply(app, instance, VERA, "YES")
    clock.advance(timedelta(seconds=5))
    beta = beta_request(instance, two_firms)
    deliver(instance)
    assert answer_of(reply(app, instance, VERA, "DONE")) == (
        f"Which request? Reply DONE {alpha.reference}."
    )
    assert fresh(alpha).status == "accepted" and fresh(beta).status == "sent"
    assert answer_of(reply(app, instance, VERA, f"DONE {alpha.reference}")).startswith(
        f"Marked {alpha.reference} resolved."
    )
    assert fresh(alpha).status == "resolved"


def test_a_vendor_silent_on_sms_is_passed_on_as_on_email(instance, texting, twilio):
    """Vera got the email and the text and answers neither: at the firm's silence
    timer the request goes to Walt, as it would with email alone."""
    Vendor.update(channels=["email", "sms"], phone="+15550102").where(
        Vendor.id == texting["walt"].id
    ).execute()
    d = submit(instance, texting)
    deliver(instance)
    assert [m["To"] for m in twilio.messages] == [VERA]
    clock.advance(timedelta(minutes=texting["account"].escalate_after_minutes, seconds=1))
    assert dispatch.escalate_due(instance) == 1
    deliver(instance)

    d = fresh(d)
    assert d.status == "escalated" and d.vendor_id == texting["walt"].id
    assert [m["To"] for m in twilio.messages] == [VERA, "+15550102"]
    assert kinds(d).count("sms_sent") == 2

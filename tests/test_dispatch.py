"""A caller's request from submission to its end, as domain functions."""

import re
from datetime import datetime, timedelta

import pytest

from outofoffice import clock, config, db, dispatch, notify, owner_setup, routing
from outofoffice.errors import ValidationError
from outofoffice.instance import Instance
from outofoffice.models import Account, Dispatch, DispatchEvent, OutboxMessage
from tests.conftest import deliver, dump_database, request_form
from tests.smtp_sink import SMTPSink

LINKS = ("accept", "decline", "resolve")


def through_smtp(instance, sink) -> Instance:
    """The same instance (database, keys), its mail going to ``sink`` over SMTP."""
    settings = {"host": "127.0.0.1", "port": sink.port, "security": "none"}
    data = {"storage": {"data_dir": str(instance.config.data_dir)}}
    data["mail"] = {"backend": "smtp", "smtp": settings}
    return Instance(config=config.from_mapping(data), keys=instance.keys)


def kinds(d) -> list[str]:
    return [
        e.kind
        for e in DispatchEvent.select()
        .where(DispatchEvent.dispatch == d)
        .order_by(DispatchEvent.id)
    ]


def to(mailbox, address):
    return [m for m in mailbox.deliver() if m["To"] == address]


def action_links(mailbox, message) -> dict[str, str]:
    text = mailbox.text(message)
    found = {}
    for line in text.splitlines():
        for action, label in (
            ("accept", "Accept:"),
            ("decline", "Decline:"),
            ("resolve", "Resolved:"),
        ):
            if line.startswith(label):
                found[action] = line.split("/v/", 1)[1].strip()
    return found


@pytest.fixture
def submitted(instance, firm, mailbox):
    sub = dispatch.submit(instance, firm["account"], request_form(firm))
    [vendor_mail] = to(mailbox, "vera@plumb.example")
    return sub, vendor_mail


def test_a_request_is_stored_with_its_events_and_vendor_email_in_one_go(instance, firm):
    sub = dispatch.submit(instance, firm["account"], request_form(firm))
    d = Dispatch.get_by_id(sub.dispatch.id)
    assert kinds(d)[:3] == ["submitted", "routed", "email_queued"]
    assert d.status == "sent" and d.vendor_id == firm["vera"].id
    assert re_reference(d.reference)
    assert (
        OutboxMessage.select().where(OutboxMessage.recipient == "vera@plumb.example").count() == 1
    )
    assert dispatch.by_status_token(sub.status_token).id == d.id


def re_reference(reference: str) -> bool:
    return re.fullmatch(r"ALP-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}", reference) is not None


def test_the_vendor_email_carries_what_the_vendor_needs_and_nothing_more(submitted, mailbox):
    sub, message = submitted
    text = mailbox.text(message)
    for needed in (
        "Tina Tenant",
        "+1 555 0199",
        "Pipe burst under the sink",
        "Elm Street",
        "12 Elm St",
        "Plumbing",
        "Alpha Properties",
        sub.dispatch.reference,
    ):
        assert needed in text
    assert set(action_links(mailbox, message)) == set(LINKS)
    assert "walt@water.example" not in text and "Walt" not in text  # other vendors stay private
    assert message["Reply-To"] == "ann@alpha.example"
    assert message["Subject"].startswith("URGENT: Plumbing at Elm Street")


def test_caller_details_are_encrypted_at_rest(submitted):
    dump = dump_database()
    for secret in ("Tina Tenant", "555 0199", "Pipe burst"):
        assert secret not in dump


def test_sending_records_email_sent_and_starts_the_silence_timer(submitted):
    sub, _ = submitted
    d = Dispatch.get_by_id(sub.dispatch.id)
    assert "email_sent" in kinds(d)
    assert d.escalate_at is not None
    assert timedelta(minutes=14) < d.escalate_at - clock.now() <= timedelta(minutes=15)


def test_reading_a_link_changes_nothing_and_decline_goes_to_the_next_vendor(
    instance, submitted, mailbox
):
    sub, message = submitted
    links = action_links(mailbox, message)
    before = kinds(sub.dispatch)
    link = dispatch.read_action(instance, links["decline"])
    assert link.action == "decline" and link.vendor.name == "Vera Plumb"
    assert kinds(sub.dispatch) == before
    _, changed = dispatch.act(instance, links["decline"])
    assert changed
    [second] = to(mailbox, "walt@water.example")
    walt_links = action_links(mailbox, second)
    _, changed = dispatch.act(instance, walt_links["accept"])
    assert changed
    d = Dispatch.get_by_id(sub.dispatch.id)
    assert d.status == "accepted" and d.vendor.name == "Walt Water"
    history = kinds(d)
    for kind in ("submitted", "routed", "email_sent", "declined", "accepted"):
        assert kind in history
    assert history.index("declined") < history.index("accepted")
    # a second POST of the same action changes nothing
    _, changed = dispatch.act(instance, walt_links["accept"])
    assert not changed and kinds(d) == history
    # the vendor who declined can no longer act
    with pytest.raises(dispatch.ActionError) as caught:
        dispatch.act(instance, links["accept"])
    assert caught.value.status == 409


def test_resolve_after_accept(instance, submitted, mailbox):
    sub, message = submitted
    links = action_links(mailbox, message)
    dispatch.act(instance, links["accept"])
    dispatch.act(instance, links["resolve"])
    assert Dispatch.get_by_id(sub.dispatch.id).status == "resolved"
    assert not dispatch.act(instance, links["resolve"])[1]


def test_silence_escalates_to_the_next_vendor_then_tells_the_owner(instance, submitted, mailbox):
    sub, _ = submitted
    clock.advance(timedelta(minutes=14))
    assert dispatch.escalate_due(instance) == 0
    clock.advance(timedelta(minutes=2))
    assert dispatch.escalate_due(instance) == 1
    [walt_mail] = to(mailbox, "walt@water.example")
    d = Dispatch.get_by_id(sub.dispatch.id)
    assert d.status == "escalated" and d.vendor.name == "Walt Water"
    escalated = DispatchEvent.get(DispatchEvent.dispatch == d, DispatchEvent.kind == "escalated")
    assert escalated.vendor.name == "Walt Water" and "no answer in 15 minutes" in escalated.detail
    clock.advance(timedelta(minutes=16))
    dispatch.escalate_due(instance)
    d = Dispatch.get_by_id(sub.dispatch.id)
    assert d.status == "unassigned" and "unassigned" in kinds(d)
    alerts = [m for m in to(mailbox, "ann@alpha.example") if m["Subject"].startswith("Needs you")]
    assert len(alerts) == 1 and d.reference in alerts[0]["Subject"]


def test_a_repeat_within_ten_minutes_pages_no_one_again(instance, firm, mailbox):
    first = dispatch.submit(instance, firm["account"], request_form(firm))
    clock.advance(timedelta(minutes=9))
    again = dispatch.submit(instance, firm["account"], request_form(firm, phone="+1 (555) 0199"))
    assert again.repeat and again.dispatch.id == first.dispatch.id
    assert again.status_token == ""  # a repeat never learns the first caller's status link
    assert "repeat" in kinds(first.dispatch)
    assert len(to(mailbox, "vera@plumb.example")) == 1
    clock.advance(timedelta(minutes=2))
    later = dispatch.submit(instance, firm["account"], request_form(firm))
    assert not later.repeat and later.dispatch.id != first.dispatch.id


def test_a_resolved_request_is_not_joined(instance, firm, mailbox):
    first = dispatch.submit(instance, firm["account"], request_form(firm))
    [mail] = to(mailbox, "vera@plumb.example")
    dispatch.act(instance, action_links(mailbox, mail)["resolve"])
    assert not dispatch.submit(instance, firm["account"], request_form(firm)).repeat
    assert Dispatch.select().count() == 2 and first


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("name", "", "Enter your name"),
        ("name", "x" * 101, "at most 100"),
        ("phone", "12345", "7 to 32"),
        ("phone", "call me maybe", "digits"),
        ("phone", "1" * 33, "7 to 32"),
        ("description", "", "Describe"),
        ("description", "x" * 4001, "at most 4000"),
        ("subject", "999999", "Choose"),
        ("category", "abc", "Choose"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(instance, firm, field, value, fragment):
    with pytest.raises(ValidationError) as caught:
        dispatch.submit(instance, firm["account"], request_form(firm, **{field: value}))
    assert fragment in caught.value.errors[field]
    assert Dispatch.select().count() == 0 and OutboxMessage.select().count() == 0


def test_another_firms_subject_is_refused(instance, firm, owners):
    _, beta = owners
    beta_subject = owner_setup.save(beta, owner_setup.KINDS["subjects"], {"name": "Beta HQ"})
    with pytest.raises(ValidationError):
        dispatch.submit(instance, firm["account"], request_form(firm, subject=str(beta_subject.id)))


def test_no_route_means_unassigned_and_an_owner_alert(instance, firm, mailbox):
    other = owner_setup.items(firm["account"], owner_setup.KINDS["categories"])[-1]
    sub = dispatch.submit(instance, firm["account"], request_form(firm, category=str(other.id)))
    d = Dispatch.get_by_id(sub.dispatch.id)
    assert d.status == "unassigned" and kinds(d)[:2] == ["submitted", "unrouted"]
    subjects = [m["Subject"] for m in to(mailbox, "ann@alpha.example")]
    assert any(s.startswith("Needs you") for s in subjects)


def test_owner_notification_preferences(instance, firm, mailbox):
    account = firm["account"]
    for notify_pref, expected in (("every", 1), ("failures", 0), ("none", 0), ("digest", 0)):
        Account.update(notify=notify_pref).where(Account.id == account.id).execute()
        account = Account.get_by_id(account.id)
        clock.advance(timedelta(minutes=11))
        dispatch.submit(instance, account, request_form(firm))
        owner_mail = [m for m in to(mailbox, "ann@alpha.example") if "New request" in m["Subject"]]
        assert len(owner_mail) == expected, notify_pref


def test_an_email_failing_the_same_way_try_after_try_is_one_line_with_a_count(
    instance, firm, mailbox
):
    sub = dispatch.submit(instance, firm["account"], request_form(firm))
    with SMTPSink() as sink:
        sink.refuse = "451 Greylisted, try again later"
        refusing = through_smtp(instance, sink)
        for _ in range(4):
            deliver(refusing)
            clock.advance(timedelta(minutes=6))  # past any backoff and the breaker's probe
        sink.refuse = ""
        deliver(refusing)
    failed = [
        e.detail
        for e in DispatchEvent.select().where(
            DispatchEvent.dispatch == sub.dispatch, DispatchEvent.kind == "email_failed"
        )
    ]
    vera = [d for d in failed if "vera@plumb.example" in d]
    assert vera == ["to vera@plumb.example: SMTP 451 Greylisted, try again later (4 tries)"]
    assert kinds(sub.dispatch).count("email_sent") == 1


def test_a_vendor_email_that_cannot_be_delivered_moves_on(instance, firm, mailbox):
    sub = dispatch.submit(instance, firm["account"], request_form(firm))
    with SMTPSink() as sink:
        sink.refuse = "550 No such mailbox"
        refusing = through_smtp(instance, sink)
        deliver(refusing)
    d = Dispatch.get_by_id(sub.dispatch.id)
    # the owner's notice of the request failed too (the same relay), in either order:
    # the vendor's failure is the one that moves the request on
    failed = DispatchEvent.get(
        DispatchEvent.dispatch == d,
        DispatchEvent.kind == "email_failed",
        DispatchEvent.vendor == firm["vera"].id,
    )
    assert "550" in failed.detail
    assert d.vendor.name == "Walt Water" and d.status == "escalated"
    dead = OutboxMessage.get(OutboxMessage.recipient == "vera@plumb.example")
    assert dead.status == "dead"
    alerts = OutboxMessage.select().where(
        OutboxMessage.kind == "alert", OutboxMessage.recipient == "ann@alpha.example"
    )
    assert alerts.count() == 1


def test_tampered_and_expired_links_are_refused(instance, submitted, mailbox):
    sub, message = submitted
    token = action_links(mailbox, message)["accept"]
    d_id, v_id, action, expires, sig = token.split(".")
    for bad in (
        f"{d_id}.{int(v_id) + 1}.{action}.{expires}.{sig}",
        f"{d_id}.{v_id}.resolve.{expires}.{sig}",
        f"{d_id}.{v_id}.{action}.{int(expires) + 99}.{sig}",
        f"{d_id}.{v_id}.{action}.{expires}.{sig[:-2]}xx",
        "garbage",
    ):
        with pytest.raises(dispatch.ActionError) as caught:
            dispatch.read_action(instance, bad)
        assert caught.value.status == 404
    clock.advance(timedelta(days=7, minutes=1))
    with pytest.raises(dispatch.ActionError) as caught:
        dispatch.act(instance, token)
    assert caught.value.status == 410
    assert Dispatch.get_by_id(sub.dispatch.id).status in dispatch.WAITING


def test_the_owner_reassigns_and_closes(instance, firm, submitted, mailbox):
    sub, _ = submitted
    d = Dispatch.get_by_id(sub.dispatch.id)
    dispatch.reassign(instance, firm["account"], d, str(firm["lock"].id))
    assert to(mailbox, "lou@locks.example")
    dispatch.close(instance, Dispatch.get_by_id(d.id), "Fixed by the caretaker")
    d = Dispatch.get_by_id(d.id)
    assert d.status == "closed" and kinds(d)[-1] == "closed"


class TestRouting:
    def test_most_specific_route_wins(self, instance, firm):
        account = firm["account"]
        elm, plumbing = firm["elm"], firm["plumbing"]
        special = owner_setup.create_route(
            account, str(elm.id), str(plumbing.id), "always", [str(firm["lock"].id)]
        )
        route, vendors = routing.match(account, elm.id, plumbing.id, clock.now())
        assert route.id == special.id and vendors[0].name == "Lou Locks"
        route, vendors = routing.match(account, firm["oak"].id, plumbing.id, clock.now())
        assert vendors[0].name == "Vera Plumb"

    def test_business_hours_holidays_and_the_accounts_timezone(self, instance, firm):
        account = firm["account"]  # Europe/London
        account.business_hours = routing.check_business_hours(
            {"mon": [["09:00", "17:00"]], "holidays": ["2026-12-28"]}
        )
        office = owner_setup.save(
            account,
            owner_setup.KINDS["vendors"],
            {"name": "Office", "email": "office@alpha.example"},
        )
        owner_setup.create_route(
            account, "", str(firm["plumbing"].id), "business_hours", [str(office.id)]
        )
        monday_10_london = datetime(2026, 11, 30, 10, 0)  # UTC = London in winter
        assert routing.is_business_hours(account, monday_10_london)
        assert (
            routing.match(account, None, firm["plumbing"].id, monday_10_london)[1][0].name
            == "Office"
        )
        monday_18 = datetime(2026, 11, 30, 18, 0)
        assert (
            routing.match(account, None, firm["plumbing"].id, monday_18)[1][0].name == "Vera Plumb"
        )
        holiday = datetime(2026, 12, 28, 10, 0)
        assert not routing.is_business_hours(account, holiday)
        account.timezone = "America/New_York"
        assert not routing.is_business_hours(account, monday_10_london)  # 05:00 in New York

    def test_bad_business_hours_are_explained(self):
        with pytest.raises(routing.HoursError, match="mon"):
            routing.check_business_hours({"mon": [["17:00", "09:00"]]})
        with pytest.raises(routing.HoursError, match="holiday"):
            routing.check_business_hours({"holidays": ["christmas"]})


def test_the_digest_goes_out_at_the_owners_local_hour(instance, firm, mailbox):
    account = firm["account"]
    Account.update(notify="digest", digest_hour=8).where(Account.id == account.id).execute()
    dispatch.submit(instance, Account.get_by_id(account.id), request_form(firm))
    local_hour = routing.local_time(account, clock.now()).hour
    clock.advance(timedelta(hours=(8 - local_hour) % 24, minutes=-clock.now().minute + 5))
    assert notify.send_digests(instance) == 1
    assert notify.send_digests(instance) == 0  # once a day
    [digest] = [m for m in to(mailbox, "ann@alpha.example") if m["Subject"].startswith("Your day")]
    assert "1 request" in digest["Subject"]


def test_silence_escalates_across_a_restart(instance, firm, mailbox):
    from outofoffice.scheduler import Scheduler

    sub = dispatch.submit(instance, firm["account"], request_form(firm))
    assert to(mailbox, "vera@plumb.example")
    db.database.close()  # the process stops; the timer lives on in the database
    restarted = Instance.open(instance.config)
    clock.advance(timedelta(minutes=16))
    Scheduler(restarted).escalate()  # the job a restarted scheduler runs
    assert to(mailbox, "walt@water.example")
    assert Dispatch.get_by_id(sub.dispatch.id).vendor.name == "Walt Water"


def test_a_vendor_email_that_keeps_failing_passes_on_after_the_silence_delay(instance, firm):
    sub = dispatch.submit(instance, firm["account"], request_form(firm))
    with SMTPSink() as sink:
        sink.refuse = "451 Mailbox busy, try later"
        greylisted = through_smtp(instance, sink)
        deliver(greylisted)
    assert "email_failed" in kinds(sub.dispatch)
    clock.advance(timedelta(minutes=16))
    assert dispatch.escalate_due(instance) == 1
    assert Dispatch.get_by_id(sub.dispatch.id).vendor.name == "Walt Water"


def test_a_deactivated_vendor_is_asked_nothing_more_but_finishes_an_accepted_job(
    instance, firm, submitted, mailbox
):
    sub, message = submitted
    token = action_links(mailbox, message)["accept"]
    vera = firm["vera"]
    vera.active = False
    vera.save()
    assert dispatch.read_action(instance, token).current is False
    with pytest.raises(dispatch.ActionError):
        dispatch.act(instance, token)
    assert Dispatch.get_by_id(sub.dispatch.id).status in dispatch.WAITING

    # a job accepted before the owner deactivated the vendor stays theirs to finish
    vera.active = True
    vera.save()
    links = action_links(mailbox, message)
    dispatch.act(instance, links["accept"])
    vera.active = False
    vera.save()
    dispatch.act(instance, links["resolve"])
    assert Dispatch.get_by_id(sub.dispatch.id).status == "resolved"

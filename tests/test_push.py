"""Push notifications through ntfy: a vendor's phone gets each offer with Accept and
Decline buttons that act once, and the vendor's dashboard page shows how to subscribe.

ntfy is stood in for by tests/ntfy_standin.py, which speaks ntfy's publish API."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from outofoffice import accounts, clock, config, db, dispatch, owner_setup, push
from outofoffice.channels.base import DeliveryError
from outofoffice.errors import ValidationError
from outofoffice.instance import Instance
from outofoffice.models import Category, Dispatch, DispatchEvent, OutboxMessage, Vendor
from tests.conftest import DATABASE, client, csrf_of, deliver, path_of, request_form, sign_in
from tests.ntfy_standin import NtfyStandIn

NTFY_SH = {"Origin": "https://ntfy.sh", "Sec-Fetch-Site": "cross-site"}  # ntfy's web app


@pytest.fixture
def ntfy():
    standin = NtfyStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def instance(make_instance, ntfy):
    """This installation sends push notifications through the stand-in."""
    return make_instance(push={"ntfy_url": ntfy.url})


def same_database(instance: Instance, **sections) -> Instance:
    """The same installation (database, keys) with other config sections."""
    storage = {"data_dir": str(instance.config.data_dir)}
    if DATABASE["url"]:
        storage["database"] = DATABASE["url"]
    data = {
        "server": {"base_url": instance.config.base_url},
        "storage": storage,
        "mail": {"backend": "file", "from": instance.sender},
    }
    for name, values in sections.items():  # sms__twilio: [sms.twilio]
        section, _, sub = name.partition("__")
        data.setdefault(section, {}).update({sub: values} if sub else values)
    return Instance(config=config.from_mapping(data), keys=instance.keys)


def offer(instance, firm, **form) -> Dispatch:
    """A request routed to Vera, whom the firm reaches by push too."""
    with db.write():
        Vendor.update(channels=["email", "push"]).where(Vendor.id == firm["vera"].id).execute()
    sub = dispatch.submit(instance, firm["account"], request_form(firm, **form))
    return Dispatch.get_by_id(sub.dispatch.id)


def push_rows(d=None):
    query = OutboxMessage.select().where(OutboxMessage.channel == "push")
    if d is not None:
        query = query.where(OutboxMessage.dispatch == d)
    return list(query.order_by(OutboxMessage.id))


def events(d, kind: str) -> int:
    return (
        DispatchEvent.select()
        .where(DispatchEvent.dispatch == d, DispatchEvent.kind == kind)
        .count()
    )


def press(app, url: str, headers=None):
    """What the ntfy app does for an http action button: POST to its URL, no body."""
    return app.post(path_of(url), headers=headers or {}, status="*")


# --- the offer ------------------------------------------------------------------------


def test_an_offers_push_reaches_ntfy_with_its_title_priority_and_buttons(instance, firm, ntfy):
    with db.write():  # not an emergency here
        Category.update(emergency=False).where(Category.id == firm["plumbing"].id).execute()
    d = offer(instance, firm)
    deliver(instance)
    [published] = ntfy.messages
    vera = Vendor.get_by_id(firm["vera"].id)
    assert published["topic"] == vera.push_topic
    assert published["title"] == "Plumbing for Alpha Properties"
    assert published["priority"] == 4
    for needed in (
        "Tina Tenant",
        "+1 555 0199",
        "Elm Street, 12 Elm St",
        "Pipe burst",
        d.reference,
    ):
        assert needed in published["message"]
    assert published["click"] == instance.url("/v/") + published["click"].split("/v/")[1]
    buttons = [(a["action"], a["label"], a["method"], a["clear"]) for a in published["actions"]]
    assert buttons == [("http", "Accept", "POST", True), ("http", "Decline", "POST", True)]
    assert all(a["url"].startswith(instance.url("/v/")) for a in published["actions"])
    [row] = push_rows(d)
    assert (row.status, row.provider_id, row.last_status) == ("sent", published["id"], 200)
    assert "Authorization" not in ntfy.requests[0]["headers"]  # an open server needs none
    assert events(d, "push_sent") == 1


def test_the_push_tells_the_vendor_only_what_the_request_needs(instance, firm, ntfy):
    with db.write():
        Vendor.update(notes="pays late").where(Vendor.id == firm["vera"].id).execute()
    offer(instance, firm)
    deliver(instance)
    sent = json.loads(ntfy.requests[0]["body"])
    assert set(sent) == {"topic", "title", "message", "priority", "tags", "click", "actions"}
    text = json.dumps(sent)
    for private in ("pays late", "ann@alpha.example", "Ann Alpha", "Walt", "127.0.0.1"):
        assert private not in text
    assert "Resolved" not in text  # the job is marked done on the page, after the call


def test_an_emergency_is_an_urgent_push(instance, firm, ntfy):
    with db.write():
        Category.update(emergency=True).where(Category.id == firm["plumbing"].id).execute()
    offer(instance, firm)
    deliver(instance)
    [published] = ntfy.messages
    assert published["title"] == "URGENT: Plumbing for Alpha Properties"
    assert published["priority"] == 5 and published["tags"] == ["rotating_light"]


# --- the buttons ----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, NTFY_SH], ids=["phone-app", "ntfy-web-app"])
def test_pressing_accept_accepts_once_and_a_second_press_changes_nothing(
    instance, firm, ntfy, app, headers
):
    d = offer(instance, firm)
    deliver(instance)
    accept = ntfy.messages[0]["actions"][0]["url"]
    first = press(app, accept, headers)
    assert first.status_int == 200 and "you accepted this request" in first.text
    again = press(app, accept, headers)
    assert again.status_int == 200 and "nothing changed" in again.text
    assert Dispatch.get_by_id(d.id).status == "accepted"
    assert events(d, "accepted") == 1


def test_the_ntfy_servers_own_web_app_may_read_the_answer_and_no_other_site(
    instance, firm, ntfy, app
):
    offer(instance, firm)
    deliver(instance)
    accept = ntfy.messages[0]["actions"][0]["url"]
    ours = press(app, accept, {"Origin": ntfy.url, "Sec-Fetch-Site": "cross-site"})
    assert ours.headers["Access-Control-Allow-Origin"] == ntfy.url
    other = press(app, accept, NTFY_SH)  # not this installation's ntfy server
    assert "Access-Control-Allow-Origin" not in other.headers
    page = app.get(path_of(accept), headers={"Origin": ntfy.url})
    assert "Access-Control-Allow-Origin" not in page.headers


def test_pressing_decline_passes_the_request_on(instance, firm, ntfy, app):
    d = offer(instance, firm)
    deliver(instance)
    decline = ntfy.messages[0]["actions"][1]["url"]
    assert press(app, decline, NTFY_SH).status_int == 200
    d = Dispatch.get_by_id(d.id)
    assert d.vendor_id == firm["walt"].id and events(d, "declined") == 1


def test_other_sites_still_cannot_post_anything_else(instance, firm, app):
    app.post("/login", {"email": "ann@alpha.example"}, headers=NTFY_SH, status=403)
    link = accounts.login_link(instance, firm["account"])
    app.post(path_of(link), headers=NTFY_SH, status=403)


def test_a_forged_button_changes_nothing(instance, firm, ntfy, app):
    d = offer(instance, firm)
    deliver(instance)
    accept = ntfy.messages[0]["actions"][0]["url"]
    assert press(app, accept[:-3] + "xyz", NTFY_SH).status_int == 404
    assert Dispatch.get_by_id(d.id).status == "sent" and events(d, "accepted") == 0


# --- when ntfy fails ------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500])
def test_a_rate_limit_or_a_server_error_is_tried_again(instance, firm, ntfy, clock_, status):
    ntfy.fail_next, ntfy.retry_after = [status], "7"
    d = offer(instance, firm)
    assert deliver(instance)["retry"] == 1
    [row] = push_rows(d)
    assert (row.status, row.last_status) == ("queued", status)
    assert f"ntfy {status}" in row.last_error
    if status == 429:  # ntfy's own wait
        assert row.next_attempt_at - row.created_at >= timedelta(seconds=7)
    clock_.advance(minutes=6)
    deliver(instance)
    [row] = push_rows(d)
    assert row.status == "sent" and len(ntfy.messages) == 1


def test_a_wrong_token_is_dead_lettered_with_ntfys_reason_and_never_logged(
    instance, firm, ntfy, caplog
):
    ntfy.token = "tk_right0000000000000000000000"
    wrong = same_database(instance, push={"ntfy_url": ntfy.url, "ntfy_token": "tk_secretwrong"})
    d = offer(wrong, firm)
    with caplog.at_level(logging.DEBUG):
        assert deliver(wrong)["dead"] == 1
    [row] = push_rows(d)
    assert row.status == "dead" and row.last_status == 401
    assert "ntfy 401 (40101): unauthorized" in row.last_error
    assert "ntfy_token" in row.last_error
    assert ntfy.requests[-1]["headers"]["Authorization"] == "Bearer tk_secretwrong"
    assert "tk_secretwrong" not in caplog.text and "tk_secretwrong" not in row.last_error
    assert events(d, "push_failed") == 1


def test_the_right_token_is_sent_as_a_bearer_token(instance, firm, ntfy):
    ntfy.token = "tk_right0000000000000000000000"
    right = same_database(instance, push={"ntfy_url": ntfy.url, "ntfy_token": ntfy.token})
    offer(right, firm)
    deliver(right)
    assert [row.status for row in push_rows()] == ["sent"] and len(ntfy.messages) == 1


def test_a_protected_server_without_a_token_refuses_for_good(instance, firm, ntfy):
    ntfy.token = "tk_right0000000000000000000000"
    d = offer(instance, firm)
    assert deliver(instance)["dead"] == 1
    [row] = push_rows(d)
    assert row.last_status == 403 and "forbidden" in row.last_error


# --- test messages --------------------------------------------------------------------


def test_a_test_push_is_queued_and_reaches_the_vendors_topic(instance, firm, ntfy):
    vera = Vendor.get_by_id(firm["vera"].id)
    row = push.send_test(instance, vera)
    assert row.kind == "test" and row.recipient == vera.push_topic
    deliver(instance)
    [published] = ntfy.messages
    assert published["topic"] == vera.push_topic
    assert published["title"] == "Test from Alpha Properties"


def test_a_test_push_sent_now_returns_ntfys_id_or_its_reason(instance, firm, ntfy):
    vera = Vendor.get_by_id(firm["vera"].id)
    message_id = push.send_test_now(instance, vera)
    assert message_id and message_id == ntfy.messages[0]["id"]
    assert not push_rows()  # past the outbox
    ntfy.token = "tk_right0000000000000000000000"
    with pytest.raises(DeliveryError, match="403") as refused:
        push.send_test_now(instance, vera)
    assert refused.value.permanent and refused.value.status == 403


def test_a_test_push_when_push_is_off_says_so(instance, firm):
    off = same_database(instance)
    with pytest.raises(DeliveryError, match=r"\[push\] ntfy_url"):
        push.send_test_now(off, Vendor.get_by_id(firm["vera"].id))


# --- the vendor's page ----------------------------------------------------------------


def vendor_page(app, instance, firm):
    sign_in(app, instance, firm["account"])
    return app.get(f"/dashboard/vendors/{firm['vera'].id}")


def test_a_new_vendor_gets_an_unguessable_topic_of_their_own(instance, firm):
    topics = {Vendor.get_by_id(firm[name].id).push_topic for name in ("vera", "walt", "lock")}
    assert len(topics) == 3
    assert all(t.startswith("ooo-") and len(t) >= 24 for t in topics)


def test_a_vendor_can_be_given_push_as_they_are_added(instance, firm, app):
    sign_in(app, instance, firm["account"])
    form = app.get("/dashboard/vendors").forms["add"]
    assert "channel_sms" not in form.fields  # this installation sends no SMS
    form["name"], form["email"] = "Nina Night", "nina@plumb.example"
    form["channel_push"] = True
    assert form.submit().status_int == 303
    nina = Vendor.get(Vendor.email == "nina@plumb.example")
    assert nina.channels == ["email", "push"] and nina.push_topic.startswith("ooo-")


def test_ticking_push_shows_the_subscribe_address_and_its_qr_code(instance, firm, app):
    page = vendor_page(app, instance, firm)
    assert page.html.find(id="subscribe-url") is None  # push not ticked yet
    form = page.forms["edit"]
    assert "channel_sms" not in form.fields  # this installation sends no SMS
    form["channel_push"] = True
    assert form.submit().status_int == 303
    vera = Vendor.get_by_id(firm["vera"].id)
    assert vera.channels == ["email", "push"]
    page = app.get(f"/dashboard/vendors/{vera.id}")
    url = page.html.find(id="subscribe-url").text
    assert url == f"{instance.config.push.ntfy_url}/{vera.push_topic}"
    svg = page.html.find("figure", class_="qr").find("svg")
    expected = push.qr_svg(url)  # the code of exactly the address shown
    assert svg.find("path", attrs={"stroke": "#000"})["d"] in expected
    assert push.qr_svg(url) == expected and expected in page.text
    assert "style=" not in expected and "<script" not in expected  # within the CSP
    assert "Install the ntfy app" in page.text


def test_send_a_test_queues_a_push_and_says_it_is_on_its_way(instance, firm, app, ntfy):
    with db.write():
        Vendor.update(channels=["email", "push"]).where(Vendor.id == firm["vera"].id).execute()
    page = vendor_page(app, instance, firm)
    done = page.forms["push-test"].submit().follow()
    assert "Test sent to ntfy; it should arrive within a few seconds" in done.text
    vendor_page(app, instance, firm).forms["push-test"].submit()  # pressed again
    deliver(instance)
    assert [m["title"] for m in ntfy.messages] == ["Test from Alpha Properties"]


def test_a_new_topic_replaces_a_lost_phones(instance, firm, app):
    with db.write():
        Vendor.update(channels=["email", "push"]).where(Vendor.id == firm["vera"].id).execute()
    old = Vendor.get_by_id(firm["vera"].id).push_topic
    page = vendor_page(app, instance, firm)
    done = page.forms["push-topic"].submit().follow()
    new = Vendor.get_by_id(firm["vera"].id).push_topic
    assert new != old and new in done.html.find(id="subscribe-url").text
    assert "subscribe again" in done.text


def test_a_new_topic_takes_what_still_waits_to_go(instance, firm, ntfy):
    ntfy.fail_next = [500]  # the offer waits for a retry when the phone is lost
    offer(instance, firm)
    deliver(instance)
    new = push.renew_topic(Vendor.get_by_id(firm["vera"].id))
    clock.advance(timedelta(minutes=5))
    deliver(instance)
    assert [m["topic"] for m in ntfy.messages] == [new]


def test_push_buttons_need_the_form_token(instance, firm, app):
    vendor_page(app, instance, firm)
    app.post(f"/dashboard/vendors/{firm['vera'].id}/push-test", {}, status=403)
    assert not push_rows()


def test_another_owner_neither_sees_nor_pushes_to_a_vendor(instance, firm, owners, app):
    _, beta = owners
    token = csrf_of(sign_in(app, instance, beta))
    vera = firm["vera"]
    page = app.get(f"/dashboard/vendors/{vera.id}", status=404)
    assert vera.push_topic not in page.text
    for change in ("test", "topic"):
        app.post(f"/dashboard/vendors/{vera.id}/push-{change}", {"csrf_token": token}, status=404)
    assert not push_rows()
    assert Vendor.get_by_id(vera.id).push_topic == vera.push_topic


# --- channels -------------------------------------------------------------------------


def test_sms_needs_a_phone_in_international_form(instance, firm):
    kind = owner_setup.KINDS["vendors"]
    vera = Vendor.get_by_id(firm["vera"].id)
    form = {"name": "Vera Plumb", "email": "vera@plumb.example", "channel_sms": "on"}
    for phone in ("555 0101", "(555) 010-0199", ""):
        with pytest.raises(ValidationError) as refused:
            owner_setup.save(firm["account"], kind, form | {"phone": phone}, vera, ("sms", "push"))
        assert "international form" in refused.value.errors["phone"]
    saved = owner_setup.save(
        firm["account"], kind, form | {"phone": "+1 555 010 0199"}, vera, ("sms", "push")
    )
    assert saved.channels == ["email", "sms"]


def test_a_channel_the_installation_does_not_offer_keeps_its_setting(instance, firm):
    kind = owner_setup.KINDS["vendors"]
    vera = Vendor.get_by_id(firm["vera"].id)
    form = {"name": "Vera Plumb", "email": "vera@plumb.example", "phone": "+1 555 0101"}
    vera = owner_setup.save(firm["account"], kind, form | {"channel_push": "on"}, vera, ("push",))
    assert vera.channels == ["email", "push"]
    vera = owner_setup.save(firm["account"], kind, form, vera, ())  # push turned off meanwhile
    assert vera.channels == ["email", "push"]
    vera = owner_setup.save(firm["account"], kind, form, vera, ("push",))  # unticked
    assert vera.channels == ["email"]


def test_the_page_offers_sms_where_the_installation_sends_it_and_explains_the_phone(instance, firm):
    twilio = {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32, "from_number": "+15550100100"}
    texting = same_database(
        instance,
        push={"ntfy_url": instance.config.push.ntfy_url},
        sms={"provider": "twilio"},
        sms__twilio=twilio,
    )
    app = client(texting)
    page = vendor_page(app, texting, firm)
    form = page.forms["edit"]
    form["phone"], form["channel_sms"] = "555 0101", True
    refused = form.submit(status=400)
    assert "international form" in refused.html.find(id="e-phone").text
    assert Vendor.get_by_id(firm["vera"].id).channels == ["email"]
    form = refused.forms["edit"]
    form["phone"] = "+1 555 010 0199"
    assert form.submit().status_int == 303
    assert Vendor.get_by_id(firm["vera"].id).channels == ["email", "sms"]

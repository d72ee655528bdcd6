"""One request through the real server by every channel: email to a real SMTP server,
SMS to a Twilio stand-in, push to an ntfy stand-in, webhooks to a receiver that checks
every signature with the independent `standardwebhooks` library; the vendor answers
by a signed SMS reply and by the push's Accept button; then the firm is deleted."""

import re
import time
import urllib.request

import pytest

from outofoffice import config, db, webhooks
from outofoffice.instance import Instance
from outofoffice.models import (
    Account,
    Dispatch,
    DispatchEvent,
    OutboxMessage,
    Vendor,
    WebhookEndpoint,
)
from tests.conftest import DATA, served_config
from tests.integration.test_dispatch_flow import submit as fill_routing_form
from tests.ntfy_standin import NtfyStandIn
from tests.servers import Browser
from tests.servers import run_cli as cli
from tests.smtp_sink import SMTPSink, free_port
from tests.twilio_standin import (
    AUTH_TOKEN,
    TwilioStandIn,
    config_sections,
    inbound_params,
    twilio_signature,
)
from tests.webhook_receiver import Receiver

DALE = "+13125550181"  # the sample's first plumber, in international form
CALLER = "+13125550111"


def until(found, seconds: float = 15.0, what: str = ""):
    """Wait for the server's scheduler: ``found()`` until it is truthy."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


@pytest.fixture
def peers():
    with SMTPSink() as smtp, TwilioStandIn() as twilio:
        ntfy = NtfyStandIn().start()
        receiver = Receiver(fail_first=1).start()  # the first delivery gets a 500
        try:
            yield smtp, twilio, ntfy, receiver
        finally:
            ntfy.stop()
            receiver.stop()


def setup(tmp_path, port, smtp, twilio, ntfy, receiver):
    cfg = served_config(
        tmp_path,
        port,
        mail={"backend": "smtp", "from": "Lakeshore Desk <desk@lakeshore.example>"},
        mail__smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none"},
        **config_sections(twilio),
        push={"ntfy_url": ntfy.url},
        webhooks={"allow_private": True},  # the receiver is on 127.0.0.1
    )
    cli(cfg, "migrate")
    cli(cfg, "import", str(DATA / "export-sample.json"))
    instance = Instance.open(config.load(cfg))
    with db.connection(), db.write():  # what the owner sets in the dashboard
        Account.update(notify="every", caller_sms=True).execute()
        Vendor.update(channels=["email", "sms", "push"], phone=DALE).where(
            Vendor.email == "dale@northside-plumbing.example"
        ).execute()
        account = Account.get(Account.slug == "lakeshore")
    with db.connection():
        _, receiver.secret = webhooks.add_endpoint(
            instance, account, receiver.url, ["dispatch.created", "dispatch.accepted"]
        )
    return cfg


def serving(tmp_path, servers, peers):
    """The firm set up, and the real server running on it."""
    port = free_port()
    cfg = setup(tmp_path, port, *peers)
    return cfg, servers(tmp_path, "--config", str(cfg), port=port)


def submit(browser: Browser, phone: str) -> str:
    """A caller's request from the routing page (a gas smell at Elm Street)."""
    _, _, page = browser.request("/r/lakeshore")
    status, _, done = fill_routing_form(browser, page, phone=phone)
    assert status == 200, done
    return re.search(r"Request ([A-Z0-9]{3}-[A-Z0-9]+)", done).group(1)


def texts_to(twilio: TwilioStandIn, number: str) -> list[str]:
    return [m["Body"] for m in twilio.messages if m["To"] == number]


def reply_by_sms(server_url: str, body: str, signature: str | None = None):
    """What Twilio posts when Dale texts back: signed over the URL pasted in Twilio."""
    url = server_url + "/sms/twilio/inbound"
    params = inbound_params(DALE, body)
    signed = twilio_signature(AUTH_TOKEN, url, params) if signature is None else signature
    return Browser(server_url).request(
        "/sms/twilio/inbound", params, headers={"X-Twilio-Signature": signed}
    )


def events(reference: str, kind: str) -> int:
    with db.connection():
        return (
            DispatchEvent.select()
            .join(Dispatch)
            .where(Dispatch.reference == reference, DispatchEvent.kind == kind)
            .count()
        )


def press(url: str, origin: str = "") -> int:
    """The push's button, as the ntfy app sends it: a POST with no body."""
    headers = {"Origin": origin} if origin else {}
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return response.status


def test_one_request_reaches_the_vendor_by_every_channel_and_is_accepted_once(
    tmp_path, servers, peers
):
    smtp, twilio, ntfy, receiver = peers
    cfg, server = serving(tmp_path, servers, peers)
    browser = Browser(server.url)

    reference = submit(browser, "+1 312 555 0111")
    # the vendor: an email, an SMS and a push for the one offer
    until(lambda: [m for m in smtp.messages if m["To"] == "dale@northside-plumbing.example"])
    [offer] = until(lambda: texts_to(twilio, DALE), what="the vendor's SMS")
    assert reference in offer and "Reply YES" in offer and "+1 312 555 0111" in offer
    [pushed] = until(lambda: ntfy.messages, what="the vendor's push")
    assert reference in pushed["message"]
    assert [a["label"] for a in pushed["actions"]] == ["Accept", "Decline"]
    # the caller: the reference and status link by text
    [confirmation] = until(lambda: texts_to(twilio, CALLER), what="the caller's SMS")
    assert reference in confirmation and f"{server.url}/s/" in confirmation

    # a reply whose signature is wrong changes nothing
    status, _, _ = reply_by_sms(server.url, "YES", signature="d3Jvbmc=")
    assert status == 403
    assert events(reference, "accepted") == 0
    # the correctly signed YES accepts: once, the owner told once, the caller texted
    status, _, twiml = reply_by_sms(server.url, "YES")
    assert status == 200 and f"Accepted {reference}" in twiml
    status, _, again = reply_by_sms(server.url, f"yes {reference}")
    assert status == 200 and "nothing changed" in again
    accept_button = next(a["url"] for a in pushed["actions"] if a["label"] == "Accept")
    assert press(accept_button, origin="https://ntfy.sh") == 200  # too late: no change
    assert events(reference, "accepted") == 1
    [_, accepted] = until(lambda: texts_to(twilio, CALLER)[1:] and texts_to(twilio, CALLER))
    assert "Dale of North Side Plumbing accepted" in accepted
    told = until(lambda: [m for m in smtp.messages if m["Subject"].startswith("Accepted by")])
    time.sleep(1)  # a second notice would have gone by now
    assert len([m for m in smtp.messages if m["Subject"].startswith("Accepted by")]) == 1
    assert told[0]["To"] == "maria@lakeshore-pm.example"

    # the webhook endpoint: created (after a 500 and a retry) and accepted, each verified
    until(lambda: receiver.types() == ["dispatch.created", "dispatch.accepted"], seconds=20)
    assert [d.answered for d in receiver.deliveries][:1] == [500]
    assert receiver.refused == [] or all(d.answered == 500 for d in receiver.refused)
    created = [d for d in receiver.verified if d.payload["type"] == "dispatch.created"]
    assert created[0].payload["data"]["reference"] == reference
    first_try = receiver.deliveries[0]
    assert first_try.headers["webhook-id"] == created[0].headers["webhook-id"]


def test_the_push_accept_button_accepts_once(tmp_path, servers, peers):
    smtp, twilio, ntfy, receiver = peers
    cfg, server = serving(tmp_path, servers, peers)
    reference = submit(Browser(server.url), "+1 312 555 0112")
    [pushed] = until(lambda: ntfy.messages, what="the vendor's push")
    accept = next(a for a in pushed["actions"] if a["label"] == "Accept")
    assert accept["action"] == "http" and accept["method"] == "POST"
    assert press(accept["url"]) == 200  # the phone app: no Origin
    assert press(accept["url"], origin="https://ntfy.sh") == 200  # the web app
    assert events(reference, "accepted") == 1


def test_a_deleted_firms_messages_of_every_channel_are_gone_after_the_sweep(
    tmp_path, servers, peers
):
    smtp, twilio, ntfy, receiver = peers
    cfg, server = serving(tmp_path, servers, peers)
    submit(Browser(server.url), "+1 312 555 0113")
    until(lambda: ntfy.messages and texts_to(twilio, DALE) and receiver.deliveries)
    with db.connection():
        account = Account.get(Account.slug == "lakeshore")
        channels = {
            r.channel for r in OutboxMessage.select().where(OutboxMessage.account == account)
        }
    assert channels == {"email", "sms", "push", "webhook"}

    cli(cfg, "accounts", "delete", "lakeshore", "--yes")
    swept = cli(cfg, "sweep")
    assert re.search(r"^account deletions: +1$", swept, re.M), swept
    with db.connection():
        assert Account.get_or_none(Account.slug == "lakeshore") is None
        assert OutboxMessage.select().where(OutboxMessage.account == account.id).count() == 0
        assert WebhookEndpoint.select().count() == 0
        assert Vendor.select().where(Vendor.account == account.id).count() == 0

"""Webhooks per account (SPEC section 11): endpoints and their URL rules, events signed
as Standard Webhooks, checked by an independent verifier (the `standardwebhooks`
package) in a receiver on 127.0.0.1, retried, shown on the dashboard."""

import base64
import ssl
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from outofoffice import clock, db, dispatch, webhooks
from outofoffice.channels import webhook as webhook_channel
from outofoffice.channels.base import DeliveryError
from outofoffice.channels.webhook import WebhookDeliverer
from outofoffice.errors import ValidationError
from outofoffice.models import Account, Dispatch, OutboxMessage, WebhookEndpoint
from tests.conftest import (
    csrf_of,
    deliver,
    dump_database,
    make_owners,
    request_form,
    sign_in,
)
from tests.webhook_receiver import Dripper, Receiver


@pytest.fixture
def instance(make_instance):
    """The receivers listen on 127.0.0.1: the admin allows private endpoints here."""
    return make_instance(webhooks={"allow_private": True})


def starting(server_type):
    """A fixture's maker of local servers of a type, each stopped after the test."""
    started = []

    def start(**options):
        started.append(server_type(**options).start())
        return started[-1]

    return start, started


@pytest.fixture
def receivers():
    start, started = starting(Receiver)
    yield start
    for receiver in started:
        receiver.stop()


def add(instance, account, receiver, events=webhooks.EVENTS):
    endpoint, secret = webhooks.add_endpoint(instance, account, receiver.url, list(events))
    receiver.secret = secret
    return endpoint


def submitted(instance, firm, **form):
    return dispatch.submit(instance, firm["account"], request_form(firm, **form)).dispatch


def queue(instance, d, event_type):
    """The event as dispatch.py queues it in the change's transaction; queued here only
    when the change did not queue it already."""
    with db.write():
        d = Dispatch.get_by_id(d.id)
        already = OutboxMessage.select().where(
            OutboxMessage.dispatch == d.id,
            OutboxMessage.channel == "webhook",
            OutboxMessage.subject == event_type,
        )
        if not already.exists():
            webhooks.queue_event(instance, d, event_type)


def rows(endpoint):
    return list(
        OutboxMessage.select()
        .where(OutboxMessage.endpoint_id == endpoint.id)
        .order_by(OutboxMessage.id)
    )


def later(instance, seconds=400):
    """Past any backoff (at most five minutes)."""
    clock.advance(timedelta(seconds=seconds))
    return deliver(instance)


# --- delivery -------------------------------------------------------------------------


def test_it_delivers_created_and_accepted_events_an_independent_verifier_accepts(
    instance, firm, receivers
):
    receiver = receivers()
    endpoint = add(instance, firm["account"], receiver)
    d = submitted(instance, firm)
    queue(instance, d, "dispatch.created")
    deliver(instance)
    dispatch.act(instance, dispatch.action_token(instance, d, firm["vera"], "accept"))
    queue(instance, d, "dispatch.accepted")
    deliver(instance)

    assert receiver.types() == ["dispatch.created", "dispatch.accepted"]
    assert receiver.refused == []
    accepted = receiver.verified[1].payload
    assert accepted["data"]["reference"] == d.reference
    assert accepted["data"]["status"] == "accepted"
    assert accepted["data"]["vendor"] == {"name": "Vera Plumb"}
    headers = receiver.verified[0].headers
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-signature"].startswith("v1,")
    assert [r.status for r in rows(endpoint)] == ["sent", "sent"]
    assert [r.last_status for r in rows(endpoint)] == [204, 204]


def test_it_retries_after_a_500_with_the_same_webhook_id(instance, firm, receivers):
    receiver = receivers(fail_first=1)
    endpoint = add(instance, firm["account"], receiver, ["dispatch.created"])
    queue(instance, submitted(instance, firm), "dispatch.created")

    assert deliver(instance)["retry"] == 1
    [row] = rows(endpoint)
    assert (row.status, row.attempts, row.last_status) == ("queued", 1, 500)
    assert later(instance)["sent"] == 1

    first, second = receiver.deliveries
    assert (first.answered, second.answered) == (500, 204)
    assert first.verified and second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


def test_it_sends_no_more_than_a_vendor_may_see(instance, firm, receivers):
    receiver = receivers()
    account = firm["account"]
    with db.write():
        account.contact_phone = "+1 555 0100"
        account.save(only=[Account.contact_phone])
    add(instance, account, receiver, ["dispatch.created"])
    d = submitted(instance, firm)
    queue(instance, d, "dispatch.created")
    deliver(instance)

    [delivery] = receiver.verified
    body = delivery.payload
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"].endswith("Z")
    data = body["data"]
    assert data == {
        "reference": d.reference,
        "status": data["status"],
        "subject": "Elm Street, 12 Elm St",
        "category": "Plumbing",
        "emergency": data["emergency"],
        "caller": {"name": "Tina Tenant", "phone": "+1 555 0199"},
        "description": "Pipe burst under the sink",
        "firm": {
            "name": "Alpha Properties",
            "phone": "+1 555 0100",
            "email": "ann@alpha.example",
        },
        "vendor": {"name": "Vera Plumb"},
        "created_at": webhooks.iso(d.created_at),
        "event_at": data["event_at"],
    }
    assert data["status"] in dispatch.STATUSES
    # nothing of the vendor but the name, nothing of the firm's other records
    text = delivery.body.decode()
    for private in ("vera@plumb.example", "+1 555 0101", d.status_token_hash, "Walt Water"):
        assert private not in text


def test_it_sends_an_endpoint_only_the_events_it_picked(instance, firm, receivers):
    picky = receivers()
    add(instance, firm["account"], picky, ["dispatch.accepted"])
    d = submitted(instance, firm)
    queue(instance, d, "dispatch.created")
    deliver(instance)
    assert picky.deliveries == []

    dispatch.act(instance, dispatch.action_token(instance, d, firm["vera"], "accept"))
    queue(instance, d, "dispatch.accepted")
    deliver(instance)
    assert picky.types() == ["dispatch.accepted"]


def test_it_never_sends_one_firms_events_to_another_firms_endpoint(
    instance, firm, owners, receivers
):
    _, beta = owners
    theirs = receivers()
    add(instance, beta, theirs)
    queue(instance, submitted(instance, firm), "dispatch.created")
    deliver(instance)
    assert theirs.deliveries == []


def test_it_switches_off_an_endpoint_that_answers_410_gone(instance, firm, receivers):
    receiver = receivers(answer=410)
    endpoint = add(instance, firm["account"], receiver)
    queue(instance, submitted(instance, firm), "dispatch.created")

    assert deliver(instance)["dead"] == 1
    assert WebhookEndpoint.get_by_id(endpoint.id).active is False
    [row] = rows(endpoint)
    assert (row.status, row.last_status) == ("dead", 410)
    d = submitted(instance, firm, phone="+1 555 0142")
    queue(instance, d, "dispatch.created")
    assert rows(endpoint) == [row]  # nothing more is queued for it
    assert len(receiver.deliveries) == 1


def test_it_waits_as_asked_after_a_429(instance, firm, receivers):
    receiver = receivers(answer=429)
    endpoint = add(instance, firm["account"], receiver)
    queue(instance, submitted(instance, firm), "dispatch.created")

    assert deliver(instance)["retry"] == 1
    [row] = rows(endpoint)
    assert row.last_status == 429
    wait = (row.next_attempt_at - clock.now()).total_seconds()
    assert 25 <= wait <= 30  # the receiver's Retry-After: 30


def test_it_does_not_follow_a_redirect(instance, firm, receivers):
    receiver = receivers(answer=302)
    endpoint = add(instance, firm["account"], receiver)
    queue(instance, submitted(instance, firm), "dispatch.created")

    assert deliver(instance)["retry"] == 1
    [row] = rows(endpoint)
    assert row.last_status == 302
    assert "redirect" in row.last_error
    assert len(receiver.deliveries) == 1


def test_it_gives_up_a_delivery_whose_endpoint_was_deleted(instance, firm, receivers):
    receiver = receivers()
    endpoint = add(instance, firm["account"], receiver)
    queue(instance, submitted(instance, firm), "dispatch.created")
    [row] = rows(endpoint)
    with db.write():
        WebhookEndpoint.delete().where(WebhookEndpoint.id == endpoint.id).execute()

    with pytest.raises(DeliveryError) as refused:
        WebhookDeliverer(instance.config).compose(row, instance.keys)
    assert refused.value.permanent
    assert "deleted" in str(refused.value)


def test_it_checks_the_address_again_at_send_time(instance, firm, receivers):
    """The admin turned allow_private off after the endpoint was added: the loopback
    receiver is not called, and the failure says why."""
    receiver = receivers()
    endpoint = add(instance, firm["account"], receiver)
    queue(instance, submitted(instance, firm), "dispatch.created")
    [row] = rows(endpoint)
    strict = replace(
        instance.config, webhooks=replace(instance.config.webhooks, allow_private=False)
    )
    deliverer = WebhookDeliverer(strict)

    with pytest.raises(DeliveryError) as refused:
        deliverer.send(deliverer.compose(row, instance.keys))
    assert refused.value.permanent
    assert "https://" in str(refused.value)
    assert receiver.deliveries == []


# --- endpoints and their URL rules ------------------------------------------------------

REFUSED = {
    "http://93.184.215.14/hooks": "https://",
    "https://127.0.0.1/hooks": "loopback",
    "https://localhost:8443/hooks": "loopback",
    "https://10.1.2.3/hooks": "private",
    "https://192.168.0.7/hooks": "private",
    "https://169.254.169.254/latest/meta-data": "link-local",
    "https://[fe80::1]/hooks": "link-local",
    "https://[::1]/hooks": "loopback",
    "https://[::ffff:10.0.0.1]/hooks": "private",
    "https://100.64.0.9/hooks": "carrier-grade NAT",
    "https://224.0.0.1/hooks": "multicast",
    "https://0.0.0.0/hooks": "unspecified",
    "https://oop.example.test/hooks": "this service",
    "https://OOP.example.test./other": "this service",
    "https://ann:pw@93.184.215.14/hooks": "user name",
    "https://93.184.215.14/" + "a" * 2000: "2000 characters",
    "ftp://93.184.215.14/hooks": "https://",
    "": "Enter",
    "https://93.184.215.14:0/hooks": "port from 1 to 65535",
    "https://93.184.215.14:70000/hooks": "from 1 to 65535",
    "https://[2002:7f00:1::1]/hooks": "a 6to4 address leading to a loopback address",
    "https://[2002:a00:1::1]/hooks": "a 6to4 address leading to a private network address",
    # Teredo: server 65.54.227.120, client 127.0.0.1; then server 10.0.0.1, client public
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hooks": "a Teredo address leading to a loop",
    "https://[2001:0:a00:1:8000:63bf:a247:28f1]/hooks": "a Teredo address leading to a private",
    "https://[fec0::1]/hooks": "a site-local address",
}


@pytest.mark.parametrize(("url", "why"), REFUSED.items())
def test_it_refuses_endpoints_that_are_not_public_https(make_instance, url, why):
    instance = make_instance()
    with db.connection():
        alpha, _ = make_owners()
        with pytest.raises(ValidationError) as refused:
            webhooks.add_endpoint(instance, alpha, url, ["dispatch.created"])
        assert why in refused.value.errors["url"]
        assert WebhookEndpoint.select().count() == 0


def test_it_takes_a_public_https_endpoint(make_instance):
    instance = make_instance()
    with db.connection():
        alpha, _ = make_owners()
        endpoint, secret = webhooks.add_endpoint(
            instance, alpha, "https://93.184.215.14/hooks", ["dispatch.created"]
        )
        assert endpoint.url == "https://93.184.215.14/hooks"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost:8080/hooks",
        "https://10.1.2.3/hooks",
        "http://169.254.169.254/latest",
        "http://[::1]:9000/hooks",
        "http://100.64.0.9/hooks",
    ],
)
def test_it_takes_private_endpoints_when_the_admin_allows_them(instance, owners, url):
    alpha, _ = owners
    endpoint, _ = webhooks.add_endpoint(instance, alpha, url, ["dispatch.created"])
    assert webhooks.get_endpoint(alpha, endpoint.id) is not None


def test_it_never_takes_its_own_host_even_when_private_ones_are_allowed(make_instance):
    instance = make_instance(
        webhooks={"allow_private": True},
        server={"routing_pages": "subdomain", "domain": "help.example.test"},
    )
    with db.connection():
        alpha, _ = make_owners()
        for url in (
            "http://oop.example.test/hooks",
            "https://help.example.test/",
            "https://alpha.help.example.test/r",
        ):
            with pytest.raises(ValidationError) as refused:
                webhooks.add_endpoint(instance, alpha, url, ["dispatch.created"])
            assert "this service" in refused.value.errors["url"]


def test_it_asks_for_at_least_one_known_event(instance, owners):
    alpha, _ = owners
    for events in ([], ["dispatch.exploded"]):
        with pytest.raises(ValidationError) as refused:
            webhooks.add_endpoint(instance, alpha, "http://127.0.0.1:9/h", events)
        assert "events" in refused.value.errors


def test_it_keeps_to_ten_endpoints_an_account(instance, owners):
    alpha, _ = owners
    for n in range(webhooks.MAX_ENDPOINTS):
        webhooks.add_endpoint(instance, alpha, f"http://127.0.0.1:9/{n}", ["dispatch.created"])
    with pytest.raises(ValidationError) as refused:
        webhooks.add_endpoint(instance, alpha, "http://127.0.0.1:9/x", ["dispatch.created"])
    assert "delete one" in refused.value.errors["url"]


def test_its_secrets_follow_the_spec(instance, owners):
    alpha, _ = owners
    _, secret = webhooks.add_endpoint(instance, alpha, "http://127.0.0.1:9/h", ["dispatch.created"])

    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64


# --- the dashboard ----------------------------------------------------------------------


def add_on_page(app, url, events=("dispatch.created", "dispatch.accepted"), status=201):
    page = app.get("/dashboard/webhooks")
    return app.post(
        "/dashboard/webhooks",
        {"csrf_token": csrf_of(page), "url": url, "events": list(events)},
        status=status,
    )


def test_it_shows_the_secret_once_and_stores_it_encrypted(app, instance, firm, receivers):
    receiver = receivers()
    sign_in(app, instance, firm["account"])
    added = add_on_page(app, receiver.url)
    secret = added.html.find(id="secret").find("code").text
    assert secret.startswith("whsec_")
    assert "docs/channels.md" in added.text

    assert secret not in app.get("/dashboard/webhooks").text
    with db.connection():
        stored = dump_database()
        assert secret not in stored
        assert secret.removeprefix("whsec_") not in stored
        # the shown secret is the one deliveries are signed with
        receiver.secret = secret
        queue(instance, submitted(instance, firm), "dispatch.created")
    deliver(instance)
    assert receiver.types() == ["dispatch.created"]


def test_it_says_what_to_fix_in_a_refused_endpoint(app, instance, firm):
    sign_in(app, instance, firm["account"])
    page = app.get("/dashboard/webhooks")
    refused = app.post(
        "/dashboard/webhooks",
        {"csrf_token": csrf_of(page), "url": "https://oop.example.test/h"},
        status=400,
    )
    assert "this service itself" in refused.text
    assert "Pick at least one event" in refused.text
    assert refused.html.find(id="f-url")["value"] == "https://oop.example.test/h"


def test_the_list_shows_each_delivery_with_its_status_code(app, instance, firm, receivers):
    receiver = receivers(fail_first=1)
    sign_in(app, instance, firm["account"])
    add_on_page(app, receiver.url)
    with db.connection():
        [endpoint] = webhooks.endpoints(firm["account"])
        receiver.secret = webhooks.secret_of(instance, endpoint)
        queue(instance, submitted(instance, firm), "dispatch.created")
    page = app.get("/dashboard/webhooks")
    assert "waiting to be sent" in page.text

    deliver(instance)
    row = app.get("/dashboard/webhooks").html.find(id=f"endpoint-{endpoint.id}").find("tbody")
    assert "HTTP 500" in row.text
    assert "will try again" in row.text

    with db.connection():
        later(instance)
    cells = [
        td.get_text(" ", strip=True)
        for td in app.get("/dashboard/webhooks")
        .html.find(id=f"endpoint-{endpoint.id}")
        .find("tbody")
        .find("tr")
        .find_all("td")
    ]
    assert cells[0] == "dispatch.created"
    assert cells[2:] == ["2", "HTTP 204", "delivered"]


def test_the_test_button_sends_a_test_to_that_endpoint_alone(app, instance, firm, receivers):
    tried, other = receivers(), receivers()
    sign_in(app, instance, firm["account"])
    add_on_page(app, tried.url)
    add_on_page(app, other.url)
    with db.connection():
        first, second = webhooks.endpoints(firm["account"])
        tried.secret = webhooks.secret_of(instance, first)
        other.secret = webhooks.secret_of(instance, second)
    page = app.get("/dashboard/webhooks")

    answer = app.post(f"/dashboard/webhooks/{first.id}/test", {"csrf_token": csrf_of(page)})
    assert answer.status_int == 303
    assert "on its way" in answer.follow().text
    deliver(instance)

    assert tried.types() == ["webhook.test"]
    assert tried.verified[0].payload["data"]["firm"] == {"name": "Alpha Properties"}
    assert other.deliveries == []
    assert "webhook.test" in app.get("/dashboard/webhooks").text


def test_the_test_button_needs_the_form_token(app, instance, firm, receivers):
    receiver = receivers()
    sign_in(app, instance, firm["account"])
    add_on_page(app, receiver.url)
    with db.connection():
        [endpoint] = webhooks.endpoints(firm["account"])
    app.post(f"/dashboard/webhooks/{endpoint.id}/test", {"csrf_token": "forged"}, status=403)
    with db.connection():
        assert rows(endpoint) == []


def test_one_owner_never_reaches_another_owners_endpoints(app, instance, firm, owners, receivers):
    alpha, beta = owners
    receiver = receivers()
    with db.connection():
        endpoint = add(instance, alpha, receiver)
    sign_in(app, instance, beta)
    page = app.get("/dashboard/webhooks")
    assert receiver.url not in page.text
    token = csrf_of(page)

    app.get(f"/dashboard/webhooks/{endpoint.id}/delete", status=404)
    app.post(f"/dashboard/webhooks/{endpoint.id}/delete", {"csrf_token": token}, status=404)
    app.post(f"/dashboard/webhooks/{endpoint.id}/test", {"csrf_token": token}, status=404)
    with db.connection():
        assert webhooks.get_endpoint(alpha, endpoint.id) is not None
        assert webhooks.get_endpoint(beta, endpoint.id) is None
        assert rows(endpoint) == []


def test_deleting_an_endpoint_asks_first_and_drops_its_queued_deliveries(
    app, instance, firm, receivers
):
    receiver = receivers()
    sign_in(app, instance, firm["account"])
    add_on_page(app, receiver.url)
    with db.connection():
        [endpoint] = webhooks.endpoints(firm["account"])
        queue(instance, submitted(instance, firm), "dispatch.created")
        assert len(rows(endpoint)) == 1

    confirm = app.get(f"/dashboard/webhooks/{endpoint.id}/delete")
    assert receiver.url in confirm.text
    action = f"/dashboard/webhooks/{endpoint.id}/delete"
    [form] = [f for f in confirm.forms.values() if f.action == action]
    assert form.submit().status_int == 303

    with db.connection():
        assert WebhookEndpoint.get_or_none(WebhookEndpoint.id == endpoint.id) is None
        assert rows(endpoint) == []
    deliver(instance)
    assert receiver.deliveries == []
    assert receiver.url not in app.get("/dashboard/webhooks").text


def test_the_dashboard_links_to_the_webhooks_page(app, instance, firm):
    overview = sign_in(app, instance, firm["account"])
    assert overview.html.find("a", href="/dashboard/webhooks").text == "Webhooks"


# --- https: the certificate is checked for the endpoint's name ------------------------


def certificates(folder, name):
    """A certificate authority of the test's own, and a certificate it signed for
    ``name``: (the authority's PEM file, a server context with the certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def made(subject, issuer, key, signer, extensions):
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = made("Test CA", "Test CA", ca_key, ca_key, [(x509.BasicConstraints(True, None), True)])
    leaf = made(
        name,
        "Test CA",
        key,
        ca_key,
        [
            (x509.SubjectAlternativeName([x509.DNSName(name)]), False),
            (x509.BasicConstraints(False, None), True),
        ],
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "leaf.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    return folder / "ca.pem", context


def test_it_posts_over_https_to_the_checked_address_with_the_name_verified(
    instance, firm, receivers, tmp_path, monkeypatch
):
    """localhost resolves to ::1 and 127.0.0.1; the receiver listens on the second, and
    its certificate names localhost, which the connection to the address checks."""
    authority, context = certificates(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))
    receiver = receivers(tls=context, host="localhost")
    endpoint = add(instance, firm["account"], receiver, ["dispatch.created"])
    queue(instance, submitted(instance, firm), "dispatch.created")

    deliver(instance)
    assert [(r.status, r.last_status) for r in rows(endpoint)] == [("sent", 204)]
    assert receiver.types() == ["dispatch.created"]
    assert receiver.verified[0].headers["Host"] == f"localhost:{receiver.port}"


def test_it_refuses_a_certificate_for_another_name(
    instance, firm, receivers, tmp_path, monkeypatch
):
    authority, context = certificates(tmp_path, "elsewhere.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))
    receiver = receivers(tls=context, host="localhost")
    endpoint = add(instance, firm["account"], receiver, ["dispatch.created"])
    queue(instance, submitted(instance, firm), "dispatch.created")

    deliver(instance)
    [row] = rows(endpoint)
    assert (row.status, row.attempts) == ("queued", 1)
    assert "securely" in row.last_error
    assert receiver.deliveries == []


def test_an_endpoint_that_keeps_failing_holds_back_no_other(instance, firm, receivers):
    down, up = receivers(fail_first=100), receivers()
    failing = add(instance, firm["account"], down, ["dispatch.created"])
    add(instance, firm["account"], up, ["dispatch.created"])
    for n in range(4):  # four callers: four requests, none a repeat of another
        submitted(instance, firm, phone=f"+1 555 010 {n}{n}{n}{n}")
    deliver(instance)

    assert up.types() == ["dispatch.created"] * 4
    assert [(r.status, r.last_status) for r in rows(failing)] == [("queued", 500)] * 4


# --- what the security review found ---------------------------------------------------


@pytest.fixture
def drippers():
    start, started = starting(Dripper)
    yield start
    for dripper in started:
        dripper.stop()


def test_a_send_has_one_deadline_of_fifteen_seconds_in_all(instance):
    assert webhook_channel.DEADLINE == 15
    assert instance.deliverers["webhook"].deadline == webhook_channel.DEADLINE
    assert webhook_channel.MAX_ADDRESSES == 2


def test_it_gives_up_on_an_endpoint_that_drips_its_answer_at_the_deadline(instance, firm, drippers):
    """Each byte comes well within any per-read timeout; the answer as a whole would
    take a minute. The deadline (shortened here from 15 s) ends the send."""
    dripper = drippers(pause=0.2)
    endpoint, _ = webhooks.add_endpoint(
        instance, firm["account"], dripper.url, ["dispatch.created"]
    )
    queue(instance, submitted(instance, firm), "dispatch.created")
    instance.deliverers["webhook"].deadline = 1.5

    started = time.monotonic()
    assert deliver(instance)["retry"] == 1
    assert time.monotonic() - started < 4
    [row] = rows(endpoint)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.last_error == "the endpoint took longer than 1.5 s"
    assert dripper.requests == 1


def test_it_gives_up_on_an_endpoint_that_never_starts_tls_at_the_deadline(instance, drippers):
    silent = drippers(silent=True)
    deliverer = WebhookDeliverer(instance.config)
    deliverer.deadline = 1
    target = webhooks.parse_url(instance.config, f"https://127.0.0.1:{silent.port}/hooks")

    started = time.monotonic()
    with pytest.raises(DeliveryError) as late:
        deliverer.post(target, ["127.0.0.1"], {}, b"{}")
    assert time.monotonic() - started < 3
    assert str(late.value) == "the endpoint took longer than 1 s"
    assert not late.value.permanent


def signed(receiver, body=b'{"type":"webhook.test"}'):
    timestamp = int(time.time())
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_channel.signature(
            receiver.secret, "msg_1", timestamp, body.decode()
        ),
        "Content-Type": "application/json",
    }, body


def test_it_tries_at_most_two_of_a_hosts_addresses(instance, receivers):
    """127.0.0.2 and 127.0.0.3 refuse (the receiver listens on 127.0.0.1 alone)."""
    receiver = receivers()
    receiver.secret = webhooks.new_secret()
    deliverer = WebhookDeliverer(instance.config)
    target = webhooks.parse_url(instance.config, receiver.url)

    with pytest.raises(DeliveryError) as unreachable:
        deliverer.post(target, ["127.0.0.2", "127.0.0.3", "127.0.0.1"], *signed(receiver))
    assert "cannot reach 127.0.0.1: Connection refused" in str(unreachable.value)
    assert receiver.deliveries == []

    status, _ = deliverer.post(target, ["127.0.0.2", "127.0.0.1"], *signed(receiver))
    assert status == 204
    assert len(receiver.verified) == 1


def test_it_percent_encodes_a_non_ascii_path_and_query(instance, firm, receivers):
    receiver = receivers()
    endpoint, receiver.secret = webhooks.add_endpoint(
        instance, firm["account"], receiver.url + "/hé/a%20b?q=ü&r=%C3%A9", ["dispatch.created"]
    )
    queue(instance, submitted(instance, firm), "dispatch.created")
    deliver(instance)

    assert [(r.status, r.last_status) for r in rows(endpoint)] == [("sent", 204)]
    [delivery] = receiver.verified
    assert delivery.path == "/hooks/h%C3%A9/a%20b?q=%C3%BC&r=%C3%A9"


def test_it_looks_up_an_international_host_name_as_dns_spells_it(instance):
    target = webhooks.parse_url(instance.config, "https://Bücher.example/ö")
    assert (target.host, target.path) == ("xn--bcher-kva.example", "/%C3%B6")


def test_an_unforeseen_failure_is_a_retryable_delivery_error_without_the_secret(
    instance, firm, receivers
):
    """A stored secret that is not base64 (no product path writes one) fails in the
    signing; the failure names its kind, never its text."""
    receiver = receivers()
    endpoint = add(instance, firm["account"], receiver, ["dispatch.created"])
    broken = "whsec_notbase64"
    with db.write():
        WebhookEndpoint.update(secret=instance.keys.encrypt(broken)).where(
            WebhookEndpoint.id == endpoint.id
        ).execute()
    queue(instance, submitted(instance, firm), "dispatch.created")
    [row] = rows(endpoint)
    deliverer = WebhookDeliverer(instance.config)

    with pytest.raises(DeliveryError) as failed:
        deliverer.send(deliverer.compose(row, instance.keys))
    assert str(failed.value) == "the delivery failed unexpectedly (binascii.Error)"
    assert not failed.value.permanent
    assert "notbase64" not in str(failed.value)
    assert receiver.deliveries == []


def test_a_webhook_request_keeps_its_secret_and_body_out_of_its_repr(instance):
    request = webhook_channel.WebhookRequest(
        endpoint_id=1,
        url="https://93.184.215.14/h",
        message_id="msg_1",
        body='{"caller":"Tina Tenant"}',
        secret="whsec_c2VjcmV0",
    )
    assert "whsec_c2VjcmV0" not in repr(request)
    assert "Tina" not in repr(request)
    assert "msg_1" in repr(request)


def test_it_refuses_an_address_that_resolves_to_this_instance(make_instance):
    """base_url names an address; the endpoint writes it another way."""
    instance = make_instance(server={"base_url": "https://93.184.215.14"})
    with db.connection():
        alpha, _ = make_owners()
        with pytest.raises(ValidationError) as refused:
            webhooks.add_endpoint(
                instance, alpha, "https://[::ffff:93.184.215.14]:8443/h", ["dispatch.created"]
            )
        assert "this service itself" in refused.value.errors["url"]


def test_it_tells_a_loopback_instance_from_another_port_by_address(make_instance):
    instance = make_instance(
        webhooks={"allow_private": True}, server={"base_url": "http://localhost:8123"}
    )
    with db.connection():
        alpha, _ = make_owners()
        with pytest.raises(ValidationError) as refused:
            webhooks.add_endpoint(instance, alpha, "http://127.0.0.1:8123/h", ["dispatch.created"])
        assert "this service itself" in refused.value.errors["url"]
        endpoint, _ = webhooks.add_endpoint(
            instance, alpha, "http://127.0.0.1:8124/h", ["dispatch.created"]
        )
        assert endpoint.url == "http://127.0.0.1:8124/h"


def test_it_refuses_at_send_time_an_endpoint_that_became_this_instance(instance, firm, receivers):
    """The instance moved to the endpoint's address after the endpoint was added."""
    receiver = receivers()
    endpoint = add(instance, firm["account"], receiver, ["dispatch.created"])
    queue(instance, submitted(instance, firm), "dispatch.created")
    [row] = rows(endpoint)
    moved = replace(
        instance.config,
        server=replace(instance.config.server, base_url=f"http://localhost:{receiver.port}"),
    )
    deliverer = WebhookDeliverer(moved)

    with pytest.raises(DeliveryError) as refused:
        deliverer.send(deliverer.compose(row, instance.keys))
    assert refused.value.permanent
    assert "this service itself" in str(refused.value)
    assert receiver.deliveries == []


def test_a_second_test_press_queues_nothing_while_the_first_waits(app, instance, firm, receivers):
    receiver = receivers()
    sign_in(app, instance, firm["account"])
    add_on_page(app, receiver.url)
    with db.connection():
        [endpoint] = webhooks.endpoints(firm["account"])
        receiver.secret = webhooks.secret_of(instance, endpoint)
    token = csrf_of(app.get("/dashboard/webhooks"))
    press = f"/dashboard/webhooks/{endpoint.id}/test"

    assert "is on its way;" in app.post(press, {"csrf_token": token}).follow().text
    again = app.post(press, {"csrf_token": token}).follow()
    assert "A test is on its way already" in again.text
    with db.connection():
        assert [r.subject for r in rows(endpoint)] == ["webhook.test"]

    deliver(instance)
    assert receiver.types() == ["webhook.test"]
    assert "is on its way;" in app.post(press, {"csrf_token": token}).follow().text
    with db.connection():
        assert [r.status for r in rows(endpoint)] == ["sent", "queued"]

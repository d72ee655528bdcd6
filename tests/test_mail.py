"""Mailers against real peers: a file drop, a real SMTP server, a local Resend stand-in."""

import email
import email.policy
import json
import re
import sqlite3
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import peewee
import pytest

from outofoffice import breaker, clock, db, outbox
from outofoffice.instance import Instance
from outofoffice.mail import Message
from outofoffice.mail.filedrop import FileMailer
from outofoffice.models import OutboxMessage
from outofoffice.scheduler import Scheduler
from tests.conftest import deliver
from tests.smtp_sink import SMTPSink, free_port


def queue(instance, to="vera@vendor.example", subject="Hello", text="Body text", kind="test", **kw):
    with db.connection(), db.write():
        row = outbox.enqueue(
            instance.keys,
            sender=instance.sender,
            to=to,
            subject=subject,
            text=text,
            html=f"<p>{text}</p>",
            kind=kind,
            **kw,
        )
    return row.id


def smtp_instance(make_instance, port, sections=None, **smtp):
    """An instance whose mail goes to the SMTP server on ``port`` over loopback."""
    settings = {"host": "127.0.0.1", "port": port, "security": "none", **smtp}
    return make_instance(mail={"backend": "smtp"}, mail__smtp=settings, **(sections or {}))


def row(row_id):
    with db.connection():
        return OutboxMessage.get_by_id(row_id)


def test_the_file_mailer_writes_one_complete_eml_per_message(instance, mailbox):
    queue(instance, subject="Pipe burst")
    [message] = mailbox.deliver()
    assert message["Subject"] == "Pipe burst"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert mailbox.text(message).strip() == "Body text"
    assert message.get_body(preferencelist=("html",)).get_content().strip() == "<p>Body text</p>"
    assert not list(instance.config.mail_dir.glob(".tmp-*"))


def test_a_reader_of_the_mail_folder_never_sees_half_a_message(instance):
    """Whoever watches the folder (a person, a test, a script) reads only whole files."""
    mailer = FileMailer(instance.config)
    body = "Water through the ceiling. " * 20000
    done = threading.Event()
    seen = set()

    def write():
        for n in range(30):
            mailer.send(
                Message(
                    sender=instance.sender,
                    to="vera@vendor.example",
                    subject=f"Leak {n}",
                    text=body,
                    html="",
                    message_id=f"<{n}@test.example>",
                )
            )
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    folder = instance.config.mail_dir
    while not done.is_set():
        for path in folder.glob("*.eml") if folder.exists() else []:
            if path.name not in seen:
                message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                assert message.get_body().get_content().strip() == body.strip()
                seen.add(path.name)
    writer.join()
    assert len(list(folder.glob("*.eml"))) == 30


def test_queued_bodies_are_encrypted_and_emptied_once_sent(instance, mailbox):
    row_id = queue(instance, text="Gas smell at 4 Oak Lane")
    with db.connection():
        raw = db.database.execute_sql("SELECT body_text FROM outbox").fetchone()[0]
    assert "Oak Lane" not in raw
    mailbox.deliver()
    sent = row(row_id)
    assert sent.status == "sent" and sent.body_text == "" and sent.body_html == ""


def test_control_characters_never_reach_a_header():
    message = Message(
        sender="A <a@example.com>",
        to="b@example.com\r\nBcc: c@example.com",
        subject="Hi\r\nBcc: evil@example.com",
        text="t",
        html="",
        message_id="<1@example.com>",
    )
    rendered = message.to_bytes().decode()
    assert "\nBcc:" not in rendered


def test_smtp_delivers_to_a_real_server(make_instance):
    with SMTPSink() as sink:
        instance = smtp_instance(make_instance, sink.port)
        row_id = queue(instance, subject="Test via SMTP")
        assert deliver(instance)["sent"] == 1
        [message] = sink.wait_for(1)
    assert message["Subject"] == "Test via SMTP"
    assert message["Message-ID"] == row(row_id).message_id
    assert sink.envelopes == [("noreply@oop.example.test", ["vera@vendor.example"])]


@pytest.mark.parametrize("connections", [1, 4])
def test_emails_go_out_side_by_side_so_one_slow_recipient_holds_back_no_other(
    make_instance, connections
):
    with SMTPSink() as sink:
        sink.slow = {"slow@vendor.example": 1.5}
        instance = smtp_instance(make_instance, sink.port, connections=connections)
        queue(instance, to="slow@vendor.example", subject="Slow")  # first in line
        for n in range(6):
            queue(instance, subject=f"Quick {n}")
        assert deliver(instance)["sent"] == 7
    order = [m["Subject"] for m in sink.messages]
    assert sorted(order) == [
        "Quick 0",
        "Quick 1",
        "Quick 2",
        "Quick 3",
        "Quick 4",
        "Quick 5",
        "Slow",
    ]
    if connections == 1:
        assert order[0] == "Slow"  # one connection: everything waited behind it
    else:
        assert order[-1] == "Slow"  # the others went out over the other connections
        assert sink.greetings <= connections


def test_the_scheduler_keeps_its_smtp_connection_between_runs(make_instance):
    with SMTPSink() as sink:
        instance = smtp_instance(make_instance, sink.port, connections=1)
        scheduler = Scheduler(instance)
        try:
            for n in range(3):
                queue(instance, subject=f"Leak {n}")
                scheduler.deliver_outbox()
            assert len(sink.wait_for(3)) == 3
            assert sink.greetings == 1  # one connection served all three runs
        finally:
            scheduler.stop()


def test_smtp_logs_in_when_a_username_is_set(make_instance, tmp_path):
    (tmp_path / "pw").write_text("s3cret")
    with SMTPSink(username="relay", password="s3cret") as sink:
        instance = smtp_instance(
            make_instance, sink.port, username="relay", password_file=str(tmp_path / "pw")
        )
        queue(instance)
        assert deliver(instance)["sent"] == 1
        assert len(sink.wait_for(1)) == 1


def test_a_temporary_smtp_failure_is_retried_with_backoff(make_instance):
    with SMTPSink() as sink:
        sink.refuse = "451 Try again later"
        instance = smtp_instance(make_instance, sink.port)
        row_id = queue(instance)
        assert deliver(instance)["retry"] == 1
        failed = row(row_id)
        assert failed.status == "queued" and failed.attempts == 1 and "451" in failed.last_error
        delay = (failed.next_attempt_at - clock.now()).total_seconds()
        assert 3 <= delay <= 7
        assert deliver(instance) == {"sent": 0, "retry": 0, "dead": 0, "released": 0}  # not due yet
        sink.refuse = ""
        clock.advance(timedelta(seconds=8))
        assert deliver(instance)["sent"] == 1
        assert len(sink.wait_for(1)) == 1


def test_a_permanent_smtp_refusal_is_dead_lettered(make_instance):
    with SMTPSink() as sink:
        sink.refuse = "550 No such user"
        instance = smtp_instance(make_instance, sink.port)
        row_id = queue(instance)
        assert deliver(instance)["dead"] == 1
    assert row(row_id).status == "dead"


def test_an_unreachable_server_is_retried_until_the_row_expires(make_instance):
    instance = smtp_instance(make_instance, free_port(), timeout=2)
    row_id = queue(instance)
    assert deliver(instance)["retry"] == 1
    clock.advance(timedelta(hours=24))
    assert deliver(instance)["dead"] == 1
    assert row(row_id).status == "dead"


def test_retry_delays_grow_from_seconds_to_five_minutes():
    delays = [outbox.retry_delay(n) for n in range(1, 10)]
    assert 4 <= delays[0] <= 6 and 12 <= delays[1] <= 18 and 36 <= delays[2] <= 54
    assert max(delays) <= 300 * 1.2


class ResendStandIn(BaseHTTPRequestHandler):
    """Speaks Resend's documented POST /emails contract."""

    responses: list = []
    received: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, dict(self.headers), body))
        status, headers, payload = type(self).responses.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(payload).encode())

    def log_message(self, *args):
        return None


@pytest.fixture
def resend(make_instance):
    server = ThreadingHTTPServer(("127.0.0.1", 0), ResendStandIn)
    ResendStandIn.responses, ResendStandIn.received = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    instance = make_instance(
        mail={"backend": "resend"},
        mail__resend={
            "api_key": "re_test_key",
            "api_url": f"http://127.0.0.1:{server.server_port}",
        },
    )
    yield instance, ResendStandIn
    server.shutdown()


def test_resend_gets_the_documented_request_and_a_stable_idempotency_key(resend):
    instance, api = resend
    api.responses += [
        (429, {"Retry-After": "2"}, {"message": "slow down"}),
        (200, {}, {"id": "abc"}),
    ]
    row_id = queue(instance, subject="Via Resend", reply_to="owner@alpha.example")
    assert deliver(instance)["retry"] == 1
    waited = (row(row_id).next_attempt_at - clock.now()).total_seconds()
    assert 1 <= waited <= 2.5
    clock.advance(timedelta(seconds=3))
    assert deliver(instance)["sent"] == 1
    (path, first_headers, body), (_, second_headers, _) = api.received
    assert path == "/emails"
    assert first_headers["Authorization"] == "Bearer re_test_key"
    assert first_headers["Idempotency-Key"] == second_headers["Idempotency-Key"]
    assert body["subject"] == "Via Resend" and body["to"] == ["vera@vendor.example"]
    assert body["text"].strip() == "Body text" and body["html"] == "<p>Body text</p>"
    assert body["reply_to"] == "owner@alpha.example"
    assert body["headers"]["Auto-Submitted"] == "auto-generated"


def test_resend_client_errors_are_dead_lettered_with_the_providers_message(resend):
    instance, api = resend
    api.responses.append((422, {}, {"message": "Invalid `to` field"}))
    row_id = queue(instance)
    assert deliver(instance)["dead"] == 1
    assert "Invalid `to` field" in row(row_id).last_error


def test_resend_server_errors_are_retried(resend):
    instance, api = resend
    api.responses.append((503, {}, {"message": "unavailable"}))
    row_id = queue(instance)
    assert deliver(instance)["retry"] == 1
    assert row(row_id).status == "queued"


def test_non_ascii_names_and_subjects_survive(instance, mailbox):
    queue(instance, subject="Fuite d'eau à la Résidence Élan", text="Café crème ☕")
    [message] = mailbox.deliver()
    assert message["Subject"] == "Fuite d'eau à la Résidence Élan"
    assert mailbox.text(message).strip() == "Café crème ☕"


@pytest.mark.postgresql_only
def test_a_deliverer_whose_claim_ran_out_and_was_taken_sends_nothing(instance, mailbox):
    """Two processes, as the database sees them: the first claimed the row and stalled
    past its lease, the second claimed it since. Only the second sends it."""
    row_id = queue(instance, subject="Pipe burst")
    lease = timedelta(seconds=120)
    send = (instance.mailer, instance.keys, outbox.Hooks())
    with db.connection():
        stalled, first = outbox._due("email", 10, lease)
        db.database.execute_sql(
            'UPDATE "outbox" SET "claimed_until" = "claimed_until" - interval \'1 hour\''
        )
        taken, second = outbox._due("email", 10, lease)
        assert [r.id for r in stalled] == [r.id for r in taken] == [row_id]
        assert outbox.send_claimed(stalled[0], first, lease, *send) is None
        assert mailbox.deliver() == []
        assert outbox.send_claimed(taken[0], second, lease, *send) == "sent"
    assert [m["Subject"] for m in mailbox.deliver()] == ["Pipe burst"]
    assert row(row_id).status == "sent"


@pytest.mark.postgresql_only
def test_a_live_claim_is_not_taken_by_another_process(instance, mailbox):
    queue(instance)
    with db.connection():
        mine, _ = outbox._due("email", 10, timedelta(seconds=120))
        theirs, _ = outbox._due("email", 10, timedelta(seconds=120))
    assert len(mine) == 1 and theirs == []


@pytest.mark.sqlite_only
def test_on_sqlite_a_row_still_marked_claimed_is_sent_once(instance, mailbox):
    """A row copied over from PostgreSQL may carry a claim: the one delivering process
    on SQLite sends and records it all the same."""
    row_id = queue(instance, subject="Copied over")
    with db.connection(), db.write():
        OutboxMessage.update(claimed_by="old-host:1:abcd").where(
            OutboxMessage.id == row_id
        ).execute()
    assert [m["Subject"] for m in mailbox.deliver()] == ["Copied over"]
    assert mailbox.deliver() == []
    assert row(row_id).status == "sent"


# --- faults: an outcome that cannot be written, a relay that is down -------------------


def hold_write_lock(instance):
    """Another process's writer: SQLite's write lock, taken and held until released."""
    path = instance.config.database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, check_same_thread=False)
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")
    return holder


def refuse_writes_after_first_send(sink, instance):
    """The write lock is taken, by another process, between the relay's 250 for the
    first email and that email's record: the database refuses the record."""
    holders = []

    def take_lock_once(message):
        if not holders:
            holders.append(hold_write_lock(instance))

    sink.on_message = take_lock_once
    return holders


@pytest.mark.sqlite_only
def test_a_sent_email_whose_record_is_refused_is_recorded_later_and_not_sent_again(
    make_instance, caplog
):
    with SMTPSink() as sink:
        instance = smtp_instance(  # one connection: the emails go one after the other
            make_instance, sink.port, {"storage": {"write_wait_seconds": 1}}, connections=1
        )
        first = queue(instance, subject="Pipe burst")
        others = [queue(instance, subject=f"Leak {n}") for n in range(3)]
        holders = refuse_writes_after_first_send(sink, instance)
        assert deliver(instance) == {"sent": 0, "retry": 0, "dead": 0, "released": 0}
        assert "was sent but that could not be recorded" in caplog.text
        assert deliver(instance)["sent"] == 0  # nothing more goes while writes are refused
        holders[0].rollback()
        assert deliver(instance)["sent"] == 3
        assert row(first).status == "sent"
        clock.advance(timedelta(seconds=instance.config.scheduler.lease_seconds + 1))
        assert deliver(instance)["sent"] == 0
    assert [m["Subject"] for m in sink.messages] == ["Pipe burst", "Leak 0", "Leak 1", "Leak 2"]
    assert {row(r).status for r in others} == {"sent"}


@pytest.mark.sqlite_only
def test_a_send_a_stopped_process_never_recorded_goes_again_after_the_lease_with_its_message_id(
    make_instance, caplog
):
    """The process that sent it is gone (it alone knew): after the lease the email goes
    once more with the same Message-ID, and the log says it may arrive twice."""
    with SMTPSink() as sink:
        instance = smtp_instance(  # one connection: the emails go one after the other
            make_instance, sink.port, {"storage": {"write_wait_seconds": 1}}, connections=1
        )
        first = queue(instance, subject="Pipe burst")
        queue(instance, subject="Leak")
        holders = refuse_writes_after_first_send(sink, instance)
        deliver(instance)
        holders[0].rollback()
        restarted = Instance.open(instance.config)
        assert deliver(restarted)["sent"] == 0  # both wait for the lease of that pass
        clock.advance(timedelta(seconds=instance.config.scheduler.lease_seconds + 1))
        assert deliver(restarted)["sent"] == 2
    assert "email messages #1, #2 were claimed by a pass that never recorded" in caplog.text
    assert [m["Subject"] for m in sink.messages] == ["Pipe burst", "Pipe burst", "Leak"]
    assert sink.messages[0]["Message-ID"] == sink.messages[1]["Message-ID"]
    assert row(first).status == "sent"


def test_when_the_relay_is_down_it_is_probed_and_the_backlog_goes_at_once_when_it_answers(
    make_instance,
):
    with SMTPSink() as sink:
        # one connection, so the count of tries is exact (with more, the tries already
        # under way when the breaker opens finish too)
        instance = smtp_instance(make_instance, sink.port, connections=1)
        sink.refuse = "451 Try again later"
        rows = [queue(instance, subject=f"Leak {n}") for n in range(8)]
        assert deliver(instance)["retry"] == breaker.OPEN_AFTER  # then it stops trying
        with db.connection():
            since = outbox.failing_since()
        assert since is not None
        assert sum(row(r).attempts for r in rows) == breaker.OPEN_AFTER
        assert deliver(instance)["retry"] == 0  # open: no probe before its time
        clock.advance(breaker.PROBE_EVERY)
        assert deliver(instance)["retry"] == 1  # one probe
        assert sum(row(r).attempts for r in rows) == breaker.OPEN_AFTER + 1
        with db.connection(), db.write():  # as after many tries: backed off for minutes
            later = clock.now() + timedelta(minutes=5)
            OutboxMessage.update(next_attempt_at=later).where(OutboxMessage.attempts > 0).execute()
        sink.refuse = ""
        clock.advance(breaker.PROBE_EVERY)
        counts = deliver(instance)
        assert counts["sent"] == 8  # none waits out its backoff
        assert counts["released"] == breaker.OPEN_AFTER + 1  # those three and the failed probe
        assert {row(r).status for r in rows} == {"sent"}
        with db.connection():
            assert outbox.failing_since() is None


def test_a_refusal_for_one_recipient_does_not_stop_the_others(make_instance):
    """550 for one address means the relay answers: the breaker stays closed."""
    with SMTPSink() as sink:
        instance = smtp_instance(make_instance, sink.port)
        sink.refuse = "550 No such user"
        for n in range(5):
            queue(instance, subject=f"Leak {n}")
        assert deliver(instance)["dead"] == 5
        with db.connection():
            assert outbox.failing_since() is None


def test_the_vendor_of_an_emergency_is_sent_first_then_other_vendors_then_the_rest(
    make_instance,
):
    with SMTPSink() as sink:
        # one connection shows the order; with more, they start in it side by side
        instance = smtp_instance(make_instance, sink.port, connections=1)
        queue(instance, subject="Owner notice")
        queue(instance, subject="Dripping tap", kind="vendor")
        queue(instance, subject="Gas smell", kind="vendor", emergency=True)
        deliver(instance)
    assert [m["Subject"] for m in sink.messages] == ["Gas smell", "Dripping tap", "Owner notice"]


@pytest.mark.sqlite_only
def test_on_sqlite_the_next_scheduler_sends_what_a_killed_one_had_claimed_at_once(
    instance, mailbox, caplog
):
    """The lock file says the process that claimed it is gone: no lease to wait out."""
    row_id = queue(instance, subject="Pipe burst")
    with db.connection():
        claimed, _ = outbox._due("email", 10, timedelta(seconds=120))  # then killed before sending
    assert [r.id for r in claimed] == [row_id]
    assert mailbox.deliver() == []  # the claim holds
    scheduler = Scheduler(instance)
    scheduler.start()  # its delivery job runs at once
    try:
        deadline = time.monotonic() + 10
        while row(row_id).status != "sent" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert [m["Subject"] for m in mailbox.deliver()] == ["Pipe burst"]
    assert "were claimed by a pass that never recorded their outcome" in caplog.text


class HistoryRefused(outbox.Hooks):
    """What follows a send fails for this row alone (its vendor was deleted meanwhile,
    a bug): the database itself takes writes."""

    def __init__(self, error):
        self.error = error

    def sent(self, row):
        if row.subject == "Pipe burst":
            raise self.error


STATEMENT_ERRORS = {  # as each database names a statement's own fault (a bug)
    "sqlite": peewee.OperationalError("no such column: detail"),
    "postgresql": peewee.ProgrammingError('column "detail" does not exist'),
}


@pytest.mark.parametrize("error", ["integrity", "statement"])
def test_a_send_whose_history_cannot_be_written_is_marked_sent_and_never_sent_again(
    make_instance, database_kind, error
):
    error = (
        peewee.IntegrityError("FOREIGN KEY constraint failed")
        if error == "integrity"
        else STATEMENT_ERRORS[database_kind]
    )
    with SMTPSink() as sink:
        instance = smtp_instance(make_instance, sink.port)
        first = queue(instance, subject="Pipe burst")
        others = [queue(instance, subject=f"Leak {n}") for n in range(3)]
        state = outbox.Delivery()
        send = (instance.mailer, instance.keys, HistoryRefused(error))
        with db.connection():
            assert outbox.deliver_due(*send, state=state)["sent"] == 4
            clock.advance(timedelta(seconds=instance.config.scheduler.lease_seconds + 1))
            assert outbox.deliver_due(*send, state=state)["sent"] == 0
    subjects = sorted(m["Subject"] for m in sink.messages)  # each once, in any order
    assert subjects == ["Leak 0", "Leak 1", "Leak 2", "Pipe burst"]
    assert {row(r).status for r in [first, *others]} == {"sent"}


def test_a_process_that_starts_while_mail_fails_does_not_say_it_goes_through(make_instance):
    with SMTPSink() as sink:
        instance = smtp_instance(make_instance, sink.port)
        sink.refuse = "451 Try again later"
        for n in range(4):
            queue(instance, subject=f"Leak {n}")
        deliver(instance)
        with db.connection():
            since = outbox.failing_since()
            assert since is not None
            # another process starts: it has heard nothing from the relay yet
            send = (instance.mailer, instance.keys, outbox.Hooks())
            outbox.deliver_due(*send, state=outbox.Delivery())
            assert outbox.failing_since() == since
            clock.advance(timedelta(minutes=10))
            outbox.deliver_due(*send, state=outbox.Delivery())  # fails, opens its own
            assert outbox.failing_since() == since  # since the first saw it


class SlowEndpoint(BaseHTTPRequestHandler):
    """A webhook endpoint that takes its time to answer."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(4)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        return None


def test_a_slow_webhook_endpoint_never_holds_back_the_vendors_email(make_instance, firm):
    """Webhooks go in a scheduler job of their own: while an endpoint takes its time
    over the first request's event, the next request's email still goes at once."""
    from outofoffice import dispatch, webhooks
    from tests.conftest import request_form

    instance = make_instance(webhooks={"allow_private": True})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), SlowEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheduler = Scheduler(instance)

    def email_sent_within(seconds: float, d) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with db.connection():
                email = OutboxMessage.get(
                    OutboxMessage.dispatch == d.id, OutboxMessage.kind == "vendor"
                )
            if email.status == "sent":
                return True
            time.sleep(0.05)
        return False

    try:
        with db.connection():
            url = f"http://127.0.0.1:{server.server_port}/hook"
            webhooks.add_endpoint(instance, firm["account"], url, ["dispatch.created"])
            first = dispatch.submit(instance, firm["account"], request_form(firm)).dispatch
        scheduler.start()
        assert email_sent_within(3, first)
        time.sleep(0.3)  # the endpoint is now thinking over the first event
        with db.connection():
            form = request_form(firm, phone="+1 555 0177")
            second = dispatch.submit(instance, firm["account"], form).dispatch
        assert email_sent_within(1.5, second)
        with db.connection():
            assert OutboxMessage.get(OutboxMessage.channel == "webhook").status == "queued"
    finally:
        scheduler.stop()
        server.shutdown()
        server.server_close()


def test_an_email_reads_back_as_written_whatever_its_words():
    subject = "Dringend: Wasser im Keller – Grüße von Zoë " + "sehr " * 30
    text = "Grüße\n.\nFrom the basement =3D\n" + "x" * 200 + "\ntrailing  \n"
    message = Message(
        sender="Zoë's Plumbing <noreply@example.com>",
        to="vera@example.com",
        subject=subject,
        text=text,
        html="<p>Grüße, Zoë</p>",
        message_id="<1@example.com>",
        headers={"X-Entity-Ref-ID": "SAM-P4VY"},
    )
    raw = message.to_bytes()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == subject.strip()
    assert parsed["From"].addresses[0].display_name == "Zoë's Plumbing"
    assert parsed["To"] == "vera@example.com"
    assert parsed["X-Entity-Ref-ID"] == "SAM-P4VY"
    assert parsed["Auto-Submitted"] == "auto-generated"

    def body(kind: str) -> str:  # as a mail client shows it: its own line ends
        return parsed.get_body((kind,)).get_content().replace("\r\n", "\n")

    assert body("plain") == text
    assert body("html").strip() == "<p>Grüße, Zoë</p>"
    assert message.envelope() == ("noreply@example.com", ["vera@example.com"])


def test_a_lone_carriage_return_never_travels_in_an_email():
    """A caller can type CR on its own; it goes out as a line end, never bare (which
    relays refuse, and some read as the end of the message)."""
    message = Message(
        sender="A <a@example.com>",
        to="b@example.com",
        subject="Leak",
        text="first\r.\rMAIL FROM:<x@example.com>\r\nlast\n",
        html="<p>one\rtwo</p>",
        message_id="<1@example.com>",
    )
    raw = message.to_bytes()
    assert re.search(rb"\r(?!\n)", raw) is None
    assert re.search(rb"(?<!\r)\n", raw) is None
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "first\n.\nMAIL FROM:<x@example.com>\nlast\n"

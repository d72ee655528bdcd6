"""A request end to end through the real server process and a real SMTP server."""

import csv
import io
import json
import re
import signal
import time

from tests.conftest import DATA, served_config
from tests.servers import Browser
from tests.servers import run_cli as cli
from tests.smtp_sink import SMTPSink, free_port

SAMPLE = DATA / "export-sample.json"
ACTION = re.compile(r"(Accept|Decline|Resolved): +http://[^/\s]+(/v/\S+)")


def setup(tmp_path, smtp_port, port, **mail):
    cfg = served_config(
        tmp_path,
        port,
        mail={"backend": "smtp", "from": "Lakeshore Desk <desk@lakeshore.example>"},
        mail__smtp={"host": "127.0.0.1", "port": smtp_port, "security": "none", **mail},
    )
    cli(cfg, "migrate")
    cli(cfg, "import", str(SAMPLE))
    return cfg


def links(message) -> dict[str, str]:
    return dict(ACTION.findall(message.get_body(("plain",)).get_content()))


def submit(browser, page, headers=None, **overrides):
    """Fill the routing page as a caller would: the first property, the leak category,
    and the form token the page carries."""
    subject = re.search(r'<option value="(\d+)">Elm Street', page).group(1)
    category = re.search(r'value="(\d+)"[^>]*>\s*<span><strong>Gas smell', page).group(1)
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)
    form = {
        "subject": subject,
        "category": category,
        "name": "Jordan Ellis",
        "phone": "+1 312 555 0111",
        "description": "Strong gas smell in the hallway",
        "form_token": token,
    }
    return browser.request("/r/lakeshore", form | overrides, headers=headers)


def wait_for(sink, count, seconds=2.0):
    start = time.monotonic()
    messages = sink.wait_for(count, timeout=seconds + 3)
    return messages, time.monotonic() - start


def test_submit_decline_accept_through_real_smtp(tmp_path, servers):
    port = free_port()
    with SMTPSink() as sink:
        cfg = setup(tmp_path, sink.port, port)
        server = servers(tmp_path, "--config", str(cfg), port=port)
        browser = Browser(server.url)
        status, _, page = browser.request("/r/lakeshore")
        assert status == 200 and "Lakeshore Property Management" in page
        assert "Leave the building now" in page and "Elm Street Apartments" in page

        status, status_url, status_page = submit(browser, page)
        assert status == 200 and "/s/" in status_url
        reference = re.search(r"Request ([A-Z0-9]{3}-[A-Z0-9]+)", status_page).group(1)
        (first,), took = wait_for(sink, 1)
        assert took < 2.0, f"vendor email took {took:.2f}s"
        assert first["To"] == "dale@northside-plumbing.example"
        body = first.get_body(("plain",)).get_content()
        for needed in (
            "Jordan Ellis",
            "+1 312 555 0111",
            "Strong gas smell",
            "Elm Street",
            "Gas smell",
            "Lakeshore Property Management",
            reference,
        ):
            assert needed in body
        actions = links(first)
        assert {"Accept", "Decline"} <= set(actions)

        assert browser.request(actions["Decline"])[0] == 200  # GET changes nothing
        assert "thank you" in browser.request(actions["Decline"], {})[2].lower()
        messages, took = wait_for(sink, 2)
        assert took < 2.0 and messages[1]["To"] == "dispatch@shah-mech.example"
        assert "thank you" in browser.request(links(messages[1])["Accept"], {})[2].lower()
        assert "nothing changed" in browser.request(links(messages[1])["Accept"], {})[2]

        login = cli(cfg, "accounts", "login-link", "lakeshore").strip()
        owner = Browser(server.url)
        owner.request("/" + login.split("/", 3)[3], {})
        _, _, history = owner.request("/dashboard/dispatches")
        dispatch_path = re.search(
            rf'href="(/dashboard/dispatches/\d+)">{reference}', history
        ).group(1)
        _, _, timeline = owner.request(dispatch_path)
        for words in (
            "Request received",
            "Route chosen; Dale",
            "Email to Dale",
            "Declined by Dale",
            "Accepted by Priya",
        ):
            assert words in timeline, words
        _, _, csv_text = owner.request("/dashboard/dispatches?format=csv")
        row = next(r for r in csv.DictReader(io.StringIO(csv_text)) if r["reference"] == reference)
        assert row["status"] == "accepted" and "declined" in row["events"]
        exported = json.loads(cli(cfg, "export", "lakeshore"))
        mine = next(d for d in exported["dispatches"] if d["reference"] == reference)
        kinds = [e["kind"] for e in mine["events"]]
        assert mine["status"] == "accepted"
        assert {"submitted", "routed", "email_sent", "declined", "accepted"} <= set(kinds)


def test_the_caller_is_answered_while_smtp_is_down_and_mail_follows_recovery(tmp_path, servers):
    port, smtp_port = free_port(), free_port()
    cfg = setup(tmp_path, smtp_port, port, timeout=2)
    server = servers(tmp_path, "--config", str(cfg), port=port)
    browser = Browser(server.url)
    started = time.monotonic()
    status, url, _ = submit(browser, browser.request("/r/lakeshore")[2])
    assert status == 200 and "/s/" in url and time.monotonic() - started < 1.5
    time.sleep(1.0)
    assert "could not be delivered" in _timeline(cfg, server)
    sink = SMTPSink(port=smtp_port)
    with sink:
        messages = sink.wait_for(1, timeout=20)  # the first retry is about 5 s later
    assert messages[0]["To"] == "dale@northside-plumbing.example"


def _timeline(cfg, server) -> str:
    login = cli(cfg, "accounts", "login-link", "lakeshore").strip()
    owner = Browser(server.url)
    owner.request("/" + login.split("/", 3)[3], {})
    _, _, history = owner.request("/dashboard/dispatches")
    path = re.findall(r'href="(/dashboard/dispatches/\d+)"', history)[0]
    return owner.request(path)[2]


def test_a_crash_between_commit_and_send_loses_nothing(tmp_path, servers):
    port = free_port()
    with SMTPSink() as sink:
        cfg = setup(tmp_path, sink.port, port)
        # no scheduler: the request is committed and nothing sends it
        first = servers(tmp_path, "--config", str(cfg), port=port, serve_args=["--no-scheduler"])
        browser = Browser(first.url)
        status, url, _ = submit(browser, browser.request("/r/lakeshore")[2])
        assert status == 200 and "/s/" in url
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert sink.messages == []
        servers(tmp_path, "--config", str(cfg), port=port)
        (message,) = sink.wait_for(1, timeout=10)
        assert message["To"] == "dale@northside-plumbing.example"


def test_the_server_log_holds_no_caller_words_tokens_or_secrets(tmp_path, servers):
    port = free_port()
    with SMTPSink() as sink:
        cfg = setup(tmp_path, sink.port, port)
        server = servers(tmp_path, "--config", str(cfg), port=port)
        browser = Browser(server.url)
        _, status_url, _ = submit(browser, browser.request("/r/lakeshore")[2])
        (first,) = sink.wait_for(1)
        decline = links(first)["Decline"]
        browser.request(decline, {})
        second = sink.wait_for(2)[1]
        accept = links(second)["Accept"]
        browser.request(accept, {})
        login = cli(cfg, "accounts", "login-link", "lakeshore").strip()
        owner = Browser(server.url)
        owner.request("/" + login.split("/", 3)[3], {})
        owner.request("/dashboard/dispatches")
        browser.request("/v/forged.1.accept.1.xyz")  # an error path logs too
        session = next(c.value for c in owner.jar)
        secret = (tmp_path / "data" / "secret.key").read_text().strip()
        server.stop()
    log = server.output()
    assert "serving on" in log  # the log is there to search
    for needle in (
        "Strong gas smell",
        "Jordan Ellis",
        "555 0111",
        status_url.rsplit("/", 1)[1].split("?")[0],
        decline.rsplit("/", 1)[1],
        accept.rsplit("/", 1)[1],
        login.rsplit("/", 1)[1],
        session,
        secret,
    ):
        assert needle not in log, needle


def test_forged_forwarded_for_headers_do_not_escape_the_limit(tmp_path, servers):
    port = free_port()
    with SMTPSink() as sink:
        cfg = setup(tmp_path, sink.port, port)
        cfg.write_text(cfg.read_text() + "\n[abuse]\ndispatches_per_ip_per_hour = 3\n")
        server = servers(tmp_path, "--config", str(cfg), port=port)
        statuses = []
        for n in range(4):
            browser = Browser(server.url)
            page = browser.request("/r/lakeshore")[2]
            forged = {"X-Forwarded-For": f"10.0.0.{n}", "Forwarded": f"for=10.1.0.{n}"}
            statuses.append(
                submit(browser, page, forged, name=f"Caller {n}", phone=f"+1 312 555 01{n}0")[0]
            )
        assert statuses == [200, 200, 200, 429]  # 200: the 303 was followed to the status page
        assert len(sink.wait_for(3, timeout=10)) >= 3

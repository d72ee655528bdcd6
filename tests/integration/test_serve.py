"""The product as an admin and an owner meet it: a real server, a real SMTP server."""

import email
import email.policy
import json
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request

from tests.conftest import base_sections, served_config, write_config
from tests.servers import Browser, routing_form, run_cli
from tests.smtp_sink import SMTPSink, free_port

LINK = re.compile(r"http://127\.0\.0\.1:\d+(/auth/[A-Za-z0-9_-]+)")


def test_serve_with_no_config_runs_on_built_in_defaults(tmp_path, servers):
    server = servers(tmp_path)
    with urllib.request.urlopen(server.url + "/") as page:
        assert page.status == 200 and b"After-hours requests" in page.read()
    with urllib.request.urlopen(server.url + "/healthz") as health:
        report = json.loads(health.read())
    healthy = {"status": "ok", "database": "ok", "scheduler": "running", "outbox_backlog": 0}
    assert report.items() >= healthy.items() and report["problems"] == []
    assert "built-in defaults" in server.output()
    assert (tmp_path / "outofoffice-data" / "outofoffice.db").exists()
    assert server.stop() == 0
    assert "shutting down" in server.output()


def smtp_config(tmp_path, sink, port):
    return served_config(
        tmp_path,
        port,
        mail={"backend": "smtp", "from": "Alpha Desk <desk@alpha.example>"},
        mail__smtp={"host": "127.0.0.1", "port": sink.port, "security": "none"},
    )


def test_signup_then_login_by_email_through_a_real_smtp_server(tmp_path, servers):
    port = free_port()
    with SMTPSink() as sink:
        server = servers(tmp_path, "--config", str(smtp_config(tmp_path, sink, port)), port=port)
        browser = Browser(server.url)
        status, _, page = browser.request(
            "/signup",
            {
                "email": "ann@alpha.example",
                "name": "Ann",
                "business_name": "Alpha Properties",
                "slug": "alpha",
                "industry": "property_management",
                "timezone": "Europe/London",
            },
        )
        assert status == 200 and "Check your email" in page
        [signup_mail] = sink.wait_for(1)
        assert signup_mail["To"] == "ann@alpha.example"
        assert signup_mail["Auto-Submitted"] == "auto-generated"
        path = LINK.search(signup_mail.get_body(("plain",)).get_content()).group(1)
        assert "Alpha Properties" in browser.request(path)[2]
        status, url, page = browser.request(path, {})
        assert url.endswith("/dashboard") and "Alpha Properties" in page

        # a second browser signs in through /login and the emailed link
        other = Browser(server.url)
        other.request("/login", {"email": "ann@alpha.example"})
        login_mail = sink.wait_for(2)[1]
        login_path = LINK.search(login_mail.get_body(("plain",)).get_content()).group(1)
        assert other.request(login_path)[0] == 200
        assert other.request(login_path)[0] == 200  # opening it twice consumes nothing
        status, url, page = other.request(login_path, {})
        assert url.endswith("/dashboard") and "Alpha Properties" in page
        assert other.request(login_path, {})[0] == 410  # never again


def test_data_survives_a_restart(tmp_path, servers):
    port = free_port()
    with SMTPSink() as sink:
        cfg = smtp_config(tmp_path, sink, port)
        first = servers(tmp_path, "--config", str(cfg), port=port)
        browser = Browser(first.url)
        browser.request(
            "/signup",
            {
                "email": "bob@beta.example",
                "name": "Bob",
                "business_name": "Beta Legal",
                "slug": "beta",
                "industry": "legal",
                "timezone": "America/New_York",
            },
        )
        [mail] = sink.wait_for(1)
        path = LINK.search(mail.get_body(("plain",)).get_content()).group(1)
        assert "Beta Legal" in browser.request(path, {})[2]
        assert first.stop() == 0

        servers(tmp_path, "--config", str(cfg), port=port)
        status, url, page = browser.request("/dashboard")
        assert status == 200 and url.endswith("/dashboard") and "Beta Legal" in page


def test_a_separate_worker_delivers_what_serve_queues(tmp_path, servers):
    port = free_port()
    cfg = served_config(tmp_path, port)
    server = servers(tmp_path, "--config", str(cfg), port=port, serve_args=["--no-scheduler"])
    health = Browser(server.url).request("/healthz")
    assert health[0] == 503 and json.loads(health[2])["scheduler"] == "stopped"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "outofoffice",
            "--config",
            str(cfg),
            "accounts",
            "create",
            "--email",
            "cy@gamma.example",
            "--name",
            "Cy",
            "--business",
            "Gamma IT",
            "--slug",
            "gamma",
            "--industry",
            "it_services",
        ],
        check=True,
        capture_output=True,
    )
    Browser(server.url).request("/login", {"email": "cy@gamma.example"})
    mail_dir = tmp_path / "data" / "mail"
    assert not mail_dir.exists() or not list(mail_dir.glob("*.eml"))

    worker = subprocess.Popen(
        [sys.executable, "-m", "outofoffice", "--config", str(cfg), "worker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not list(mail_dir.glob("*.eml")):
            time.sleep(0.1)
        [eml] = mail_dir.glob("*.eml")
        assert b"To: cy@gamma.example" in eml.read_bytes()
        # the row is marked sent just after the mailer took it: wait for that commit
        while time.monotonic() < deadline:
            report = json.loads(Browser(server.url).request("/healthz")[2])
            if report["outbox_backlog"] == 0:
                break
            time.sleep(0.1)
        assert report["scheduler"] == "running in another process"
        assert report["status"] == "ok" and report["outbox_backlog"] == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


def test_a_separate_worker_sends_at_once_what_serve_queues(tmp_path, servers):
    """Not at its next look at the outbox (every 5 s): serve wakes it. Requests 2.5 s
    apart each reach the vendor within 2 s, which a poll alone cannot do for all."""
    port = free_port()
    cfg = served_config(tmp_path, port)
    run_cli(cfg, "demo", "--slug", "alpha")
    server = servers(tmp_path, "--config", str(cfg), port=port, serve_args=["--no-scheduler"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "outofoffice", "--config", str(cfg), "worker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mail_dir = tmp_path / "data" / "mail"
    try:
        deadline = time.monotonic() + 15
        while json.loads(Browser(server.url).request("/healthz")[2])["scheduler"] != (
            "running in another process"
        ):
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        page = Browser(server.url).request("/r/alpha")[2]
        waits = []
        for n in range(3):
            time.sleep(2.5)
            submitted = time.monotonic()
            status = Browser(server.url).request(
                "/r/alpha", routing_form(page, f"+1 555 03{n:02d}")
            )[0]
            assert status == 200
            # the vendor's email and the owner's notice of each request
            while len(list(mail_dir.glob("*.eml"))) < 2 * (n + 1):
                assert time.monotonic() - submitted < 10, "the email never came"
                time.sleep(0.02)
            waits.append(time.monotonic() - submitted)
        assert max(waits) < 2, waits
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


def test_the_database_and_key_are_private_to_the_service_user(tmp_path, servers):
    server = servers(tmp_path)
    data = tmp_path / "outofoffice-data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("outofoffice.db", "secret.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert server.stop() == 0


def test_serve_on_another_port_links_there_and_so_does_demo_beside_it(tmp_path, servers):
    sections = base_sections(tmp_path)
    del sections["server"]  # base_url left at its default
    cfg = write_config(tmp_path / "config.toml", sections)
    port = free_port()
    server = servers(tmp_path, "--config", str(cfg), port=port)
    assert f"public address http://127.0.0.1:{port}" in server.output()

    printed = run_cli(cfg, "demo")  # a second terminal, while serve runs
    assert f"routing page: {server.url}/r/sample-firm" in printed
    [login] = [w for w in printed.split() if "/auth/" in w]
    assert login.startswith(server.url + "/auth/")
    browser = Browser(server.url)
    assert browser.request("/r/sample-firm")[0] == 200
    status, url, page = browser.request(login[len(server.url) :], {})
    assert status == 200 and url == server.url + "/dashboard" and "Sample Firm" in page

    # what the serving process emails links to the port it serves on, too
    Browser(server.url).request("/login", {"email": "owner@sample-firm.example"})
    mail_dir = tmp_path / "data" / "mail"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not list(mail_dir.glob("*.eml")):
        time.sleep(0.1)
    [eml] = mail_dir.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    link = LINK.search(message.get_body(("plain",)).get_content())
    assert link.group(0).startswith(server.url + "/auth/")
    assert Browser(server.url).request(link.group(1))[0] == 200

    assert server.stop() == 0  # and once it is gone, links fall back to the config's
    assert "http://127.0.0.1:8080/auth/" in run_cli(cfg, "accounts", "login-link", "sample-firm")

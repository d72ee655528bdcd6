"""Honest health: for each fault an admin must hear about (mail failing too long, a due
message waiting too long, too little free space, a database that takes no writes)
/healthz answers 503 with the reason and `outofoffice check` fails with a line naming
what to change.

No scheduler runs in this test process, so /healthz names that too; `check` does not
count it (it also runs before the service starts), so its exit code shows each fault
alone. A real `serve` with a real SMTP relay shows the healthy 200 and an outage."""

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner

from outofoffice import clock, config, db, health, outbox, portability
from outofoffice.cli import cli
from outofoffice.instance import Instance
from outofoffice.models import Setting
from tests.conftest import client, deliver, request_form
from tests.twilio_standin import TwilioStandIn, config_sections

FIELDS = {
    "status",
    "database",
    "database_writable",
    "database_writable_age_seconds",
    "scheduler",
    "outbox_backlog",
    "oldest_due_seconds",
    "mail_failing_since",
    "sms_failing_since",
    "push_failing_since",
    "free_mb",
    "problems",
}
NO_SCHEDULER = "no process delivers mail (scheduler stopped)"


def healthz(app) -> dict:
    response = app.get("/healthz", status=503)  # 503 at least for the scheduler
    assert response.headers["Cache-Control"] == "no-store"
    report = response.json
    assert set(report) == FIELDS and report["status"] == "error"
    return report


def check(instance) -> tuple[int, list[str]]:
    """`outofoffice check` on the instance's config: its exit code and output lines."""
    args = ["--config", str(instance.config.source), "check"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result.exit_code, result.output.splitlines()


def problem_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("problem: ")]


def setting(name: str) -> str | None:
    with db.connection():
        row = Setting.get_or_none(Setting.name == name)
    return row.value if row else None


def test_a_sound_installation_reports_every_field_and_check_passes(instance, app):
    report = healthz(app)
    assert report["problems"] == [NO_SCHEDULER]
    assert report["database"] == "ok" and report["database_writable"] is True
    assert report["database_writable_age_seconds"] == 0
    assert report["outbox_backlog"] == 0 and report["oldest_due_seconds"] is None
    assert report["mail_failing_since"] is None
    free = shutil.disk_usage(instance.config.data_dir).free // health.MIB
    assert report["free_mb"] == pytest.approx(free, rel=0.05)
    code, lines = check(instance)
    assert code == 0 and lines[-1] == "all checks passed", lines
    assert "database writes: ok" in lines and not problem_lines(lines)
    assert not [line for line in lines if "[health]" in line]


def test_mail_failing_longer_than_the_threshold_is_a_fault(instance, app):
    since = clock.now().replace(microsecond=0) - timedelta(seconds=30)
    with db.connection(), db.write():
        Setting.create(name=outbox.FAILING_SINCE, value=since.isoformat())
    report = healthz(app)  # failing, but not yet for [health] mail_failing_seconds
    assert report["mail_failing_since"] == since.isoformat() + "Z"
    assert report["problems"] == [NO_SCHEDULER]

    clock.advance(timedelta(seconds=45))
    [problem] = [p for p in healthz(app)["problems"] if p != NO_SCHEDULER]
    found = re.fullmatch(
        r"mail has failed for (\d+) s, since (\S+) \(over \[health\] mail_failing_seconds = 60\)",
        problem,
    )
    assert found and 75 <= int(found[1]) < 90 and found[2] == since.isoformat() + "Z"
    code, lines = check(instance)
    [line] = problem_lines(lines)
    assert code != 0 and lines[-1] == "Error: 1 health problem (above)"
    assert "[health] mail_failing_seconds" in line and "--send-test-email" in line

    with db.connection(), db.write():  # a message got through: the outbox says so
        Setting.delete().where(Setting.name == outbox.FAILING_SINCE).execute()
    report = healthz(app)
    assert report["mail_failing_since"] is None and report["problems"] == [NO_SCHEDULER]


def test_twilio_failing_is_a_fault_of_its_own_while_mail_goes(make_instance):
    """Twilio answers 500 to every text: its breaker opens after three, and once that has
    lasted [health] mail_failing_seconds /healthz names SMS, not mail."""
    with TwilioStandIn() as twilio:
        instance = make_instance(**config_sections(twilio))
        twilio.answer_next("500", times=10)
        with db.connection(), db.write():
            for _ in range(4):
                outbox.enqueue_message(
                    instance.keys,
                    channel="sms",
                    to=instance.keys.encrypt("+15550100123"),
                    body="Test",
                    kind="test",
                )
        deliver(instance)
        app = client(instance)
        report = healthz(app)
        assert report["sms_failing_since"] is not None and report["mail_failing_since"] is None
        clock.advance(timedelta(seconds=61))
        [problem] = [p for p in healthz(app)["problems"] if p != NO_SCHEDULER]
        assert problem.startswith("SMS has failed for ")
        assert "[health] mail_failing_seconds = 60" in problem


def test_a_due_message_waiting_longer_than_the_threshold_is_a_fault(instance, app, firm, mailbox):
    app.post("/r/alpha", request_form(firm), status=303)  # queues the vendor's email
    report = healthz(app)
    assert report["outbox_backlog"] >= 1 and report["oldest_due_seconds"] < 60
    assert report["problems"] == [NO_SCHEDULER]

    clock.advance(timedelta(seconds=150))  # and nothing delivered it
    report = healthz(app)
    assert report["oldest_due_seconds"] >= 150
    assert (
        "the oldest due message has waited 2 min (over [health] oldest_due_seconds = 120)"
        in report["problems"]
    )
    code, lines = check(instance)
    [line] = problem_lines(lines)
    assert code != 0 and "[health] oldest_due_seconds" in line and "outbox list" in line

    assert mailbox.deliver()
    report = healthz(app)
    assert report["outbox_backlog"] == 0 and report["oldest_due_seconds"] is None
    assert report["problems"] == [NO_SCHEDULER]


def test_less_free_space_than_the_threshold_is_a_fault(make_instance):
    instance = make_instance(health={"min_free_mb": 10_000_000})  # more than this disk has
    report = healthz(client(instance))
    [problem] = [p for p in report["problems"] if p != NO_SCHEDULER]
    assert problem == (
        f"{report['free_mb']} MiB free on the data folder's disk "
        "(under [health] min_free_mb = 10000000)"
    )
    code, lines = check(instance)
    [line] = problem_lines(lines)
    assert code != 0 and "[health] min_free_mb" in line and str(instance.config.data_dir) in line


def test_check_warns_when_free_space_is_under_twice_the_threshold(make_instance):
    free = shutil.disk_usage(make_instance().config.data_dir).free // health.MIB
    instance = make_instance(health={"min_free_mb": free * 3 // 4})
    code, lines = check(instance)
    assert code == 0 and lines[-1] == "all checks passed", lines
    [warning] = [line for line in lines if "[health] min_free_mb" in line]
    assert warning.startswith("warning: ") and "under twice" in warning
    assert healthz(client(instance))["problems"] == [NO_SCHEDULER]


@pytest.mark.sqlite_only
def test_a_write_lock_held_by_another_connection_is_a_fault(instance, app):
    holder = sqlite3.connect(instance.config.database_url.removeprefix("sqlite:///"))
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")  # as a sqlite3 shell or a script would
    try:
        report = healthz(app)
        assert report["database"] == "ok" and report["outbox_backlog"] == 0  # reads go on
        assert report["database_writable"] is False
        assert (
            "the database cannot be written: another process holds the write lock"
            in report["problems"]
        )
        # a monitor asking again soon hears that finding with its age, not a second wait
        clock.advance(timedelta(seconds=1))
        again = healthz(app)
        assert again["database_writable"] is False and again["database_writable_age_seconds"] == 1
        code, lines = check(instance)
        [line] = problem_lines(lines)
        assert code != 0 and "write lock" in line and "fuser" in line
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    clock.advance(health.PROBE_EVERY)
    report = healthz(app)
    assert report["database_writable"] is True and report["problems"] == [NO_SCHEDULER]


def test_the_write_probe_writes_at_most_once_every_few_seconds(app):
    healthz(app)
    first = setting(health.PROBE_NAME)
    assert first
    clock.advance(timedelta(seconds=1))
    report = healthz(app)
    assert setting(health.PROBE_NAME) == first  # the second call wrote nothing
    assert report["database_writable"] is True and report["database_writable_age_seconds"] == 1
    clock.advance(health.PROBE_EVERY)
    healthz(app)
    assert setting(health.PROBE_NAME) > first


@pytest.mark.sqlite_only
def test_a_real_relay_outage_turns_healthz_503(tmp_path, servers):
    """The tester's case: serve delivers through a real SMTP server that stops. (That
    /healthz is 200 again once the relay answers, the SMTP-outage test of tests/faults/
    shows, as it waits for the recovery anyway.)"""
    from tests.faults.stream import MACHINE, Relay
    from tests.faults.stream import healthz as served_health
    from tests.integration.test_scale_out import FIRM, Installation
    from tests.servers import Browser, routing_form

    with Relay() as relay:
        inst = Installation(tmp_path, relay, servers, health={"mail_failing_seconds": 1})
        instance = Instance.open(config.load(inst.config(MACHINE)), create=True)
        with db.connection():
            portability.import_account(instance, FIRM)
        server = inst.serve(MACHINE)
        status, report = served_health(server.url)
        assert status == 200 and report["status"] == "ok" and report["problems"] == []
        assert set(report) == FIELDS and report["scheduler"] == "running"

        relay.down()
        browser = Browser(server.url)
        page = browser.request("/r/alpha")[2]
        for phone in ("+1 555 0701", "+1 555 0702"):  # four emails: vendor and owner each
            assert browser.request("/r/alpha", routing_form(page, phone))[0] == 200
        status, report = wait_for(server.url, lambda s, r: s == 503)
        [problem] = report["problems"]
        assert problem.startswith("mail has failed for ") and "mail_failing_seconds = 1" in problem
        assert report["mail_failing_since"] and report["outbox_backlog"] >= 4
        result = subprocess.run(
            [sys.executable, "-m", "outofoffice", "--config", str(inst.config(MACHINE)), "check"],
            capture_output=True,
            text=True,
            check=False,
        )
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and "scheduler: ok (running in another process)" in lines
    [line] = problem_lines(lines)
    assert line.startswith("problem: mail has failed for ") and "--send-test-email" in line
    assert result.stderr.strip() == "Error: 1 health problem (above)"


def wait_for(url: str, done, timeout: float = 20.0) -> tuple[int, dict]:
    """Poll /healthz, as a monitor does, until done(status, report) holds."""
    from tests.faults.stream import healthz as served_health

    deadline = time.monotonic() + timeout
    while True:
        status, report = served_health(url)
        if done(status, report):
            return status, report
        assert time.monotonic() < deadline, (status, report)
        time.sleep(0.2)

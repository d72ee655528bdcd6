"""The privacy promises, each proven by moving the clock past its deadline."""

import subprocess
import sys
from datetime import timedelta

import pytest
from click.testing import CliRunner

from outofoffice import (
    accounts,
    clock,
    db,
    dispatch,
    key_rotation,
    keys,
    outbox,
    owner_setup,
    retention,
)
from outofoffice.cli import cli
from outofoffice.models import (
    Account,
    Dispatch,
    IPRecord,
    MagicLink,
    OutboxMessage,
    Session,
    SlugHold,
    Vendor,
    WebhookEndpoint,
)
from tests.conftest import (
    ALPHA,
    client,
    csrf_of,
    deliver,
    make_owners,
    path_of,
    request_form,
    sign_in,
    webhook_endpoint,
)


def sweep(instance) -> dict[str, int]:
    with db.connection():
        return retention.sweep_all(instance.config)


def test_used_and_expired_links_are_swept(instance, owners):
    alpha, _ = owners
    used = path_of(accounts.login_link(instance, alpha)).rsplit("/", 1)[1]
    accounts.consume_link(instance, used)
    accounts.login_link(instance, alpha)
    assert sweep(instance)["magic links"] == 1  # the used one; the fresh one stays
    clock.advance(timedelta(minutes=16))
    assert sweep(instance)["magic links"] == 1
    assert MagicLink.select().count() == 0


@pytest.mark.parametrize("days", [30, 20])
def test_sessions_end_and_are_swept_after_session_days(make_instance, days):
    instance = make_instance(retention={"session_days": days})
    with db.connection():
        account = accounts.create_account(**ALPHA)
        token = path_of(accounts.login_link(instance, account)).rsplit("/", 1)[1]
        _, session = accounts.consume_link(instance, token)
    clock.advance(timedelta(days=days) - timedelta(minutes=1))
    assert sweep(instance)["sessions"] == 0
    clock.advance(timedelta(minutes=2))
    with db.connection():
        assert accounts.session_account(session) is None
    assert sweep(instance)["sessions"] == 1


@pytest.mark.sqlite_only  # the database file is in the data dir
def test_ip_records_go_after_ip_days_and_leave_no_trace_in_any_file(instance, owners):
    IPRecord.create(ip="203.0.113.99", kind="dispatch", account=owners[0])
    clock.advance(timedelta(days=29))
    assert sweep(instance)["IP records"] == 0
    clock.advance(timedelta(days=2))
    assert sweep(instance)["IP records"] == 1
    for path in instance.config.data_dir.rglob("*"):
        if path.is_file():
            assert b"203.0.113.99" not in path.read_bytes(), path


@pytest.mark.parametrize("backend", ["console", "file"])
def test_deleting_an_account_closes_it_at_once_and_removes_it_at_the_sweep(make_instance, backend):
    instance = make_instance(mail={"backend": backend})
    app = client(instance)
    with db.connection():
        alpha, beta = make_owners()
    with db.connection():
        vera = owner_setup.save(
            alpha,
            owner_setup.KINDS["vendors"],
            {"name": "Vera", "email": "vera.secret@plumb.example"},
        )
        cat = owner_setup.items(alpha, owner_setup.KINDS["categories"])[0]
        owner_setup.create_route(alpha, "", str(cat.id), "always", [str(vera.id)])
        owner_setup.save(
            beta, owner_setup.KINDS["vendors"], {"name": "B", "email": "b@beta.example"}
        )
    status = app.post(
        "/r/alpha",
        {
            "category": cat.id,
            "name": "Zelda Quasimodo",
            "phone": "+1 555 0100",
            "description": "Xylophone leak",
        },
    )
    deliver(instance)
    page = sign_in(app, instance, alpha)
    app.get("/dashboard/account")
    app.post(
        "/dashboard/account/delete", {"csrf_token": csrf_of(page), "confirm": "nope"}, status=400
    )
    done = app.post("/dashboard/account/delete", {"csrf_token": csrf_of(page), "confirm": "alpha"})
    assert "closed" in done.text
    # at once: signed out, routing page closed, links dead
    assert app.get("/dashboard").status_int == 303
    assert "Please phone Alpha Properties" in app.get("/r/alpha").text
    app.get(status.headers["Location"], status=404)
    assert sweep(instance)["account deletions"] == 1
    with db.connection():
        assert not Account.select().where(Account.slug == "alpha").exists()
        assert Dispatch.select().count() == 0
        assert Vendor.select().where(Vendor.email == "b@beta.example").exists()  # untouched
        assert "alpha" in {h.slug for h in SlugHold.select()}
        assert "on hold" in accounts.slug_problem("alpha")
    for path in instance.config.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (b"vera.secret@plumb.example", b"Zelda Quasimodo", b"Xylophone"):
                assert secret not in data, (path, secret)
    clock.advance(timedelta(days=61))
    assert sweep(instance)["slug holds"] == 1
    with db.connection():
        assert accounts.slug_problem("alpha") is None


def test_disabling_starts_a_hold_that_the_sweep_keeps_while_the_account_exists(instance, owners):
    accounts.set_status("beta", "disabled", instance.config)
    assert SlugHold.get(SlugHold.slug == "beta").reason == "disabled"
    clock.advance(timedelta(days=61))
    assert sweep(instance)["slug holds"] == 0  # the account still owns its slug


def test_the_cli_deletes_and_sweeps(instance, owners, tmp_path):
    config_file = str(instance.config.source)
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", config_file, "accounts", "delete", "beta", "--yes"])
    assert result.exit_code == 0 and "next sweep" in result.output
    assert Session.select().count() == 0
    result = runner.invoke(cli, ["--config", config_file, "sweep"])
    assert result.exit_code == 0
    assert "account deletions: 1" in " ".join(result.output.split())
    result = runner.invoke(cli, ["--config", config_file, "export", "beta"])
    assert result.exit_code != 0 and "no account" in result.output
    assert Account.select().where(Account.slug == "alpha").exists()


@pytest.mark.sqlite_only  # the database file is in the data dir
def test_a_caller_search_of_the_data_dir_finds_nothing_right_after_a_dispatch(instance, firm):
    dispatch.submit(
        instance,
        firm["account"],
        request_form(firm, name="Quentin Zebulon", description="Marmalade flood"),
    )
    db.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    for path in instance.config.data_dir.rglob("*"):
        if path.is_file() and path.suffix != ".eml":
            data = path.read_bytes()
            assert b"Quentin Zebulon" not in data and b"Marmalade flood" not in data, path


@pytest.mark.postgresql_only
def test_a_deletion_sweep_vacuums_every_table_it_removed_rows_from(instance, firm, mailbox):
    """PostgreSQL's counterpart of secure_delete and the WAL checkpoint: the rows are
    gone and VACUUM has run on their tables (docs/security.md says what it still keeps)."""
    import time

    dispatch.submit(instance, firm["account"], request_form(firm))
    mailbox.deliver()
    with db.connection():
        accounts.request_deletion(Account.get_by_id(firm["account"].id), instance)
    assert sweep(instance)["account deletions"] == 1
    tables = {"account", "dispatch", "dispatch_event", "outbox", "vendor", "ip_record"}
    deadline = time.monotonic() + 10
    with db.connection():
        assert (
            not Dispatch.select().exists()
            and not Vendor.select().where(Vendor.account == firm["account"].id).exists()
        )
        while True:  # the statistics arrive a moment after the VACUUM
            rows = db.database.execute_sql(
                "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL"
            ).fetchall()
            vacuumed = {name for (name,) in rows}
            if tables <= vacuumed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert tables <= vacuumed, tables - vacuumed


def test_rotate_key_re_encrypts_and_old_links_keep_working(instance, firm, mailbox):
    sub = dispatch.submit(instance, firm["account"], request_form(firm, name="Rhea Rotate"))
    old_link = dispatch.action_token(instance, sub.dispatch, firm["vera"], "accept")
    before = Dispatch.get_by_id(sub.dispatch.id).caller_name
    result = CliRunner().invoke(cli, ["--config", str(instance.config.source), "rotate-key"])
    assert result.exit_code == 0 and "re-encrypted 1 dispatch row(s)" in result.output
    after = Dispatch.get_by_id(sub.dispatch.id)
    assert after.caller_name.split(".")[1] != before.split(".")[1]  # another key now
    assert len(instance.config.secret_key_path.read_text().split()) == 2
    # a process started before the rotation reads what the rotation wrote
    assert dispatch.caller(instance, after)["name"] == "Rhea Rotate"
    assert dispatch.read_action(instance, old_link).action == "accept"
    assert oct(instance.config.secret_key_path.stat().st_mode)[-3:] == "600"


def test_rotate_key_re_encrypts_webhook_secrets_and_sms_numbers(instance, firm):
    endpoint = webhook_endpoint(instance, firm["account"])
    with db.write():
        text = outbox.enqueue_message(
            instance.keys,
            channel="sms",
            to=instance.keys.encrypt("+15550100123"),
            body="Test",
            kind="test",
        )
    with db.connection():
        key_rotation.rotate(instance.config)
    newest = keys.Keys.load(instance.config.secret_key_path)
    secret = WebhookEndpoint.get_by_id(endpoint.id).secret
    recipient = OutboxMessage.get_by_id(text.id).recipient
    assert newest.is_current(secret) and newest.is_current(recipient)
    assert newest.decrypt(recipient) == "+15550100123"
    assert newest.decrypt(secret) == instance.keys.decrypt(endpoint.secret)


def test_privacy_shows_the_configured_figures_and_operator(make_instance):
    instance = make_instance(
        retention={"session_days": 20, "ip_days": 14},
        operator={"name": "Lakeshore Hosting", "contact_email": "privacy@lakeshore.example"},
    )
    page = client(instance).get("/privacy")
    assert "after 20 days" in page.text and "at most 14 days" in page.text
    assert "Lakeshore Hosting" in page.text and "privacy@lakeshore.example" in page.text
    assert "Nobody: this instance sends no data to other services." in page.text


def test_the_dashboard_export_is_accepted_by_import_on_another_instance(
    app, instance, firm, tmp_path
):
    dispatch.submit(instance, firm["account"], request_form(firm))
    sign_in(app, instance, firm["account"])
    download = app.get("/dashboard/account?download=export")
    assert "attachment" in download.headers["Content-Disposition"]
    exported = tmp_path / "alpha.json"
    exported.write_bytes(download.body)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text(f'[storage]\ndata_dir = "{other / "data"}"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "outofoffice",
            "--config",
            str(other / "config.toml"),
            "import",
            str(exported),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported alpha" in result.stdout
    history = app.get("/dashboard/account?download=history")
    assert history.text.startswith("reference,received,status")


def test_retention_longer_than_the_promise_is_refused_by_name(tmp_path):
    from outofoffice import config

    path = tmp_path / "c.toml"
    path.write_text("[retention]\nip_days = 45\n")
    with pytest.raises(config.ConfigError, match=r"\[retention\] ip_days: 45 is longer"):
        config.load(path)


def test_once_deletion_is_asked_no_vendor_hears_of_the_firm_again(instance, firm, mailbox):
    dispatch.submit(instance, firm["account"], request_form(firm))
    accounts.request_deletion(Account.get_by_id(firm["account"].id), instance)
    clock.advance(timedelta(minutes=20))
    assert dispatch.escalate_due(instance) == 0
    assert mailbox.deliver() == []


def test_a_disabled_firms_queued_mail_stays_put(instance, firm, mailbox):
    dispatch.submit(instance, firm["account"], request_form(firm))
    accounts.set_status("alpha", "disabled", instance.config)
    assert mailbox.deliver() == []
    accounts.set_status("alpha", "active", instance.config)
    assert [m["To"] for m in mailbox.deliver()].count("vera@plumb.example") == 1


def test_request_counts_and_invitations_are_swept(instance, conn):
    from outofoffice.models import Invite, RequestCount

    instance.traffic.count("/r/<slug>", 200)
    instance.traffic.flush()
    accounts.create_invite(instance, "new@firm.example")
    clock.advance(timedelta(days=31))
    removed = sweep(instance)
    assert removed["request counts"] == 1 and removed["invitations"] == 1
    assert RequestCount.select().count() == 0 and Invite.select().count() == 0


def test_after_a_rotation_an_old_copy_of_the_key_is_refused(make_instance, tmp_path):
    import dataclasses
    import shutil

    from outofoffice.instance import Instance, InstanceError

    instance = make_instance()
    old_copy = tmp_path / "old.key"
    shutil.copy(instance.config.secret_key_path, old_copy)
    with db.connection():
        key_rotation.rotate(instance.config)
    assert Instance.open(instance.config, create=False)  # the rotated key starts
    security = dataclasses.replace(instance.config.security, secret_key_file=str(old_copy))
    stale = dataclasses.replace(instance.config, security=security)
    with pytest.raises(InstanceError, match="not the secret key the database was written with"):
        Instance.open(stale, create=False)

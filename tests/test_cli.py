"""The admin's CLI: exit codes and one-line errors, through click's runner."""

import json
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from outofoffice.cli import cli
from tests.conftest import DATA, as_imported
from tests.ntfy_standin import NtfyStandIn
from tests.servers import CREATE_ALPHA
from tests.twilio_standin import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioStandIn

CREATE = CREATE_ALPHA


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def error_line(result) -> str:
    """The one error line (progress lines of `check` may come before it)."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert result.output.rstrip().endswith(errors[0]), result.output
    return errors[0]


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "etc" / "config.toml"
    run(
        "--config", path, "init", "--data-dir", tmp_path / "data", "--base-url", "https://h.example"
    )
    return path


def test_init_writes_the_config_and_a_0600_secret(tmp_path, cfg):
    assert 'base_url = "https://h.example"' in cfg.read_text()
    key = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "data" / "outofoffice.db").exists()


def test_init_listens_on_the_port_of_a_plain_http_base_url(tmp_path):
    path = tmp_path / "c.toml"
    run(
        "--config",
        path,
        "init",
        "--data-dir",
        tmp_path / "d",
        "--base-url",
        "http://127.0.0.1:9123",
    )
    assert "port = 9123" in path.read_text()


def test_init_refuses_to_overwrite(cfg, tmp_path):
    assert "exists already" in error_line(run("--config", cfg, "init", ok=False))


def test_init_refuses_a_bad_base_url(tmp_path):
    result = run("--config", tmp_path / "c.toml", "init", "--base-url", "ftp://x", ok=False)
    assert "[server] base_url" in error_line(result)
    assert not (tmp_path / "c.toml").exists()


def test_check_passes_after_init(cfg):
    result = run("--config", cfg, "check")
    assert "all checks passed" in result.output


@pytest.mark.parametrize(
    ("section", "line", "named"),
    [
        ("server", "prot = 1", "[server] prot"),
        ("server", 'port = "eighty"', "[server] port"),
        ("mail", 'backend = "pigeon"', "[mail] backend"),
        ("retention", "ip_days = 365", "[retention] ip_days"),
    ],
)
def test_check_fails_with_one_line_naming_the_key(cfg, section, line, named):
    text = cfg.read_text()
    if f"[{section}]\n" in text:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{line}\n")
    else:
        text += f"\n[{section}]\n{line}\n"
    cfg.write_text(text)
    message = error_line(run("--config", cfg, "check", ok=False))
    assert named in message and str(cfg) in message


def test_check_sends_a_test_email(cfg, tmp_path):
    cfg.write_text(cfg.read_text() + '\n[mail]\nbackend = "file"\n')
    result = run("--config", cfg, "check", "--send-test-email", "admin@h.example")
    assert "test email: sent" in result.output
    [eml] = (tmp_path / "data" / "mail").glob("*.eml")
    assert b"To: admin@h.example" in eml.read_bytes()


def test_check_without_init_says_what_to_do(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "nothing"}"\n')
    assert "outofoffice init" in error_line(run("--config", path, "check", ok=False))


def test_migrate_is_idempotent(cfg):
    assert "schema version" in run("--config", cfg, "migrate").output
    assert "applied" not in run("--config", cfg, "migrate").output


def test_accounts_create_list_show_disable_enable(cfg):
    assert "https://h.example/r/alpha" in run("--config", cfg, *CREATE).output
    listed = json.loads(run("--config", cfg, "accounts", "list", "--json").output)
    assert [(a["slug"], a["status"]) for a in listed] == [("alpha", "active")]
    shown = run("--config", cfg, "accounts", "show", "alpha").output
    assert "Alpha Properties" in shown and "property_management" in shown
    assert "disabled" in run("--config", cfg, "accounts", "disable", "alpha").output
    assert "disabled" in error_line(
        run("--config", cfg, "accounts", "login-link", "alpha", ok=False)
    )
    run("--config", cfg, "accounts", "enable", "alpha")
    assert "alpha" in run("--config", cfg, "accounts", "list").output


def test_accounts_create_names_the_bad_option(cfg):
    bad = [*CREATE[:-4], "--slug", "admin", "--industry", "legal"]
    assert "--slug" in error_line(run("--config", cfg, *bad, ok=False))
    bad_tz = [*CREATE, "--timezone", "Mars/Base"]
    assert "--timezone" in error_line(run("--config", cfg, *bad_tz, ok=False))
    run("--config", cfg, *CREATE)
    assert "--email" in error_line(
        run("--config", cfg, *[a if a != "alpha" else "alpha-two" for a in CREATE], ok=False)
    )


def test_login_link_prints_a_url_from_base_url(cfg):
    run("--config", cfg, *CREATE)
    for who in ("alpha", "ann@alpha.example"):
        url = run("--config", cfg, "accounts", "login-link", who).output.strip()
        assert url.startswith("https://h.example/auth/") and len(url) > 60


def test_unknown_accounts_are_one_line_errors(cfg):
    for command in ("show", "disable", "enable", "login-link"):
        assert "nobody" in error_line(run("--config", cfg, "accounts", command, "nobody", ok=False))


def test_every_command_has_help():
    def walk(group, path):
        yield path
        for name, command in getattr(group, "commands", {}).items():
            yield from walk(command, [*path, name])

    for path in walk(cli, []):
        result = run(*path, "--help")
        assert "Usage:" in result.output


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "outofoffice", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "accounts" in result.stdout


def test_init_without_a_config_option_writes_config_toml_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTOFOFFICE_CONFIG", raising=False)
    run("init")
    assert (tmp_path / "config.toml").is_file()
    assert (tmp_path / "outofoffice-data" / "secret.key").is_file()
    assert "using config file" in run("check").output


def test_the_environment_names_the_config(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTOFOFFICE_CONFIG", str(cfg))
    assert str(cfg) in run("check").output


SAMPLE = DATA / "export-sample.json"


def test_import_then_export_round_trips_the_shared_sample(cfg, tmp_path):
    assert "imported lakeshore" in run("--config", cfg, "import", SAMPLE).output
    out = tmp_path / "lakeshore.json"
    run("--config", cfg, "export", "lakeshore", "-o", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    exported, sample = json.loads(out.read_text()), json.loads(SAMPLE.read_text())
    assert exported["format"] == "outofoffice-export" and exported["version"] == 1
    assert exported["routes"] == sample["routes"]
    imported = [v | {"active": True, "channels": ["email"]} for v in sample["vendors"]]
    assert as_imported(exported["vendors"]) == imported
    assert json.loads(run("--config", cfg, "export", "lakeshore").output)["account"]["slug"] == (
        "lakeshore"
    )


def test_a_bad_import_file_is_reported_and_creates_nothing(cfg, tmp_path):
    data = json.loads(SAMPLE.read_text())
    data["version"] = 7
    data["vendors"][0]["email"] = "not-an-address"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = run("--config", cfg, "import", bad, ok=False)
    assert result.exit_code != 0
    assert "version" in result.output and "vendors[0].email" in result.output
    assert "nothing was imported" in result.output
    assert json.loads(run("--config", cfg, "accounts", "list", "--json").output) == []
    (tmp_path / "junk.json").write_text("{not json")
    assert "not a JSON export" in error_line(
        run("--config", cfg, "import", tmp_path / "junk.json", ok=False)
    )


def test_demo_prints_a_routing_page_and_a_login_link(cfg):
    output = run("--config", cfg, "demo").output
    assert "https://h.example/r/sample-firm" in output
    assert "https://h.example/auth/" in output
    shown = run("--config", cfg, "accounts", "show", "sample-firm").output
    assert "vendors:        4" in shown


def test_outbox_list_and_retry(cfg):
    run("--config", cfg, "demo")
    run("--config", cfg, "outbox", "list")
    assert "no emails" in run("--config", cfg, "outbox", "list", "--status", "dead").output
    assert "one of them" in error_line(run("--config", cfg, "outbox", "retry", ok=False))
    assert "queued 0" in run("--config", cfg, "outbox", "retry", "--all-failed").output


def test_stats_counts_accounts_dispatches_outbox_and_the_last_sweep(cfg):
    run("--config", cfg, "import", DATA / "export-sample.json")
    before = run("--config", cfg, "stats").output
    assert "accounts:      1 (active 1)" in before
    assert "never" in before
    run("--config", cfg, "sweep")
    report = json.loads(run("--config", cfg, "stats", "--json").output)
    sample = json.loads((DATA / "export-sample.json").read_text())
    assert sum(report["dispatches"].values()) == len(sample["dispatches"])
    assert report["last_sweep"]["at"] and "sessions" in report["last_sweep"]["removed"]
    assert report["outbox"] == {"queued": 0, "oldest_queued_minutes": None, "dead": 0}


def test_backup_refuses_to_overwrite_and_names_pg_dump_for_postgresql(cfg, tmp_path):
    target = tmp_path / "backup.db"
    assert "wrote" in run("--config", cfg, "backup", target).output
    assert "already exists" in error_line(run("--config", cfg, "backup", target, ok=False))
    pg = tmp_path / "pg.toml"
    pg.write_text(
        cfg.read_text().replace("[storage]", '[storage]\ndatabase = "postgresql://u@db/oop"')
    )
    assert "pg_dump" in error_line(run("--config", pg, "backup", tmp_path / "b2.db", ok=False))


def test_accounts_sign_out_ends_sessions_and_keeps_the_firm_running(cfg, tmp_path):
    run("--config", cfg, *CREATE)
    from outofoffice import accounts, config, db
    from outofoffice.instance import Instance

    instance = Instance.open(config.load(cfg))
    with db.connection():
        token = accounts.start_session(instance, accounts.find("alpha"))
    assert (
        "ended 1 session(s) of 1 account(s)"
        in run("--config", cfg, "accounts", "sign-out", "alpha").output
    )
    with db.connection():
        assert accounts.session_account(token) is None
        assert accounts.find("alpha").status == "active"
    assert "ended 0 session(s)" in run("--config", cfg, "accounts", "sign-out", "--all").output
    assert run("--config", cfg, "accounts", "sign-out", ok=False).exit_code == 2


def test_backup_never_writes_through_a_planted_link(cfg, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "planted.db").symlink_to(victim)
    result = run("--config", cfg, "backup", tmp_path / "planted.db", ok=False)
    assert "already exists" in error_line(result)
    assert victim.read_text() == "precious"
    # and the folder is left as it was: no temporary files behind
    run("--config", cfg, "backup", tmp_path / "good.db")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".outofoffice-backup")]
    assert stat.S_IMODE((tmp_path / "good.db").stat().st_mode) == 0o600


def test_a_lost_key_is_never_silently_replaced(cfg, tmp_path):
    run("--config", cfg, "import", DATA / "export-sample.json")
    key = tmp_path / "data" / "secret.key"
    key.rename(tmp_path / "key-elsewhere")
    for command in (["migrate"], ["check"], ["stats"], ["export", "lakeshore"]):
        line = error_line(run("--config", cfg, *command, ok=False))
        assert "secret key is missing" in line and "restore" in line, command
    assert not key.exists()
    (tmp_path / "key-elsewhere").rename(key)
    assert "all checks passed" in run("--config", cfg, "check").output


def _signs_in(cfg, link: str) -> bool:
    """Does this printed sign-in link open the confirm page of the sample firm?"""
    from outofoffice import config
    from outofoffice.instance import Instance
    from tests.conftest import client, path_of

    app = client(Instance.open(config.load(cfg)))
    return "Sample Firm" in app.get(path_of(link)).text


def test_demo_run_again_prints_the_sample_firms_links(cfg):
    first = run("--config", cfg, "demo").output
    again = run("--config", cfg, "demo").output
    assert "is there from an earlier demo" in again
    assert "routing page: https://h.example/r/sample-firm" in again
    [link] = [w for w in again.split() if w.startswith("https://h.example/auth/")]
    assert link not in first  # a fresh sign-in link
    assert _signs_in(cfg, link)
    shown = run("--config", cfg, "accounts", "show", "sample-firm").output
    assert "vendors:        4" in shown  # nothing made twice


def test_demo_on_a_real_firms_slug_points_at_login_link(cfg):
    run("--config", cfg, *CREATE)
    line = error_line(run("--config", cfg, "demo", "--slug", "alpha", ok=False))
    assert "--slug" in line and "outofoffice accounts login-link alpha" in line
    shown = run("--config", cfg, "accounts", "show", "alpha").output
    assert "vendors:        0" in shown


def test_check_warns_while_the_operator_contact_is_the_default(cfg):
    result = run("--config", cfg, "check")
    [warning] = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "[operator] contact_email" in warning and "admin@localhost" in warning
    assert "all checks passed" in result.output
    cfg.write_text(cfg.read_text() + '\n[operator]\ncontact_email = "privacy@h.example"\n')
    assert "warning" not in run("--config", cfg, "check").output


def test_init_without_a_base_url_leaves_it_to_follow_the_port(tmp_path):
    path = tmp_path / "c.toml"
    run("--config", path, "init", "--data-dir", tmp_path / "d")
    assert "\nbase_url" not in path.read_text()
    path.write_text(path.read_text().replace("[server]\n", "[server]\nport = 9123\n"))
    run("--config", path, *CREATE)
    link = run("--config", path, "accounts", "login-link", "alpha").output.strip()
    assert link.startswith("http://127.0.0.1:9123/auth/")


def with_channels(cfg, twilio: TwilioStandIn, ntfy: NtfyStandIn) -> None:
    cfg.write_text(
        cfg.read_text()
        + '\n[sms]\nprovider = "twilio"\n[sms.twilio]\n'
        + f'account_sid = "{ACCOUNT_SID}"\nauth_token = "{AUTH_TOKEN}"\n'
        + f'from_number = "{FROM_NUMBER}"\napi_url = "{twilio.url}"\n'
        + f'[push]\nntfy_url = "{ntfy.url}"\n'
    )


def test_check_texts_and_pushes_a_test_at_once(cfg):
    twilio, ntfy = TwilioStandIn().start(), NtfyStandIn().start()
    try:
        with_channels(cfg, twilio, ntfy)
        run("--config", cfg, "import", SAMPLE)
        result = run(
            "--config",
            cfg,
            "check",
            "--send-test-sms",
            "+1 555 010 0199",
            "--send-test-push",
            "Dale@northside-plumbing.example",
        )
        assert f"sms: ok (twilio ({twilio.url}, from {FROM_NUMBER}))" in result.output
        assert f"push: ok (ntfy ({ntfy.url}))" in result.output
        [text] = twilio.messages
        assert text["To"] == "+15550100199" and "SMS works" in text["Body"]
        assert f"test SMS: sent to +15550100199 ({text['sid']})" in result.output
        [pushed] = ntfy.messages
        assert pushed["topic"].startswith("ooo-")
        assert "test push: sent to Dale Kowalski of Lakeshore" in result.output
    finally:
        twilio.stop()
        ntfy.stop()


def test_check_says_why_a_test_sms_or_push_cannot_go(cfg):
    error = error_line(run("--config", cfg, "check", "--send-test-sms", "+15550100199", ok=False))
    assert error == 'Error: --send-test-sms: SMS is off; set [sms] provider = "twilio"'
    twilio, ntfy = TwilioStandIn().start(), NtfyStandIn().start()
    try:
        with_channels(cfg, twilio, ntfy)
        bad = run("--config", cfg, "check", "--send-test-sms", "555-0199", ok=False)
        assert "is not a phone number in international form" in error_line(bad)
        nobody = run("--config", cfg, "check", "--send-test-push", "no@one.example", ok=False)
        assert (
            error_line(nobody) == "Error: --send-test-push: no vendor has the email no@one.example"
        )
        twilio.answer_next("21211")
        refused = run("--config", cfg, "check", "--send-test-sms", "+15550100199", ok=False)
        assert error_line(refused).startswith("Error: test SMS not sent: Twilio 400 21211")
    finally:
        twilio.stop()
        ntfy.stop()

"""The config schema: defaults are the promises, bad input names the key."""

from pathlib import Path

import pytest

from outofoffice import config, policy
from tests.conftest import write_config

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parent.parent


def load_text(tmp_path, text: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(path)


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(config.ConfigError) as caught:
        load_text(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "config.toml") in message
    return message


def test_retention_defaults_are_the_privacy_promises():
    cfg = config.from_mapping({})
    assert cfg.retention.magic_link_minutes == policy.MAGIC_LINK_MINUTES == 15
    assert cfg.retention.session_days == policy.SESSION_DAYS == 30
    assert cfg.retention.ip_days == policy.IP_DAYS == 30
    assert cfg.retention.server_log_days == policy.SERVER_LOG_DAYS == 30
    assert cfg.retention.slug_hold_days == policy.SLUG_HOLD_DAYS == 60
    assert cfg.retention.deletion_days == policy.DELETION_DAYS == 7


def test_spec_defaults():
    cfg = config.from_mapping({})
    assert cfg.server.base_url == "http://127.0.0.1:8080"
    assert (cfg.server.host, cfg.server.port, cfg.server.threads) == ("127.0.0.1", 8080, 8)
    assert cfg.server.signup == "open" and cfg.server.routing_pages == "path"
    assert cfg.mail.backend == "console"
    assert cfg.data_dir == Path.cwd() / "outofoffice-data"
    assert cfg.database_url == f"sqlite:///{Path.cwd() / 'outofoffice-data' / 'outofoffice.db'}"
    assert cfg.secret_key_path == cfg.data_dir / "secret.key"
    assert cfg.abuse.dispatches_per_ip_per_hour == 10


def test_it_names_the_key_of_a_bad_value(tmp_path):
    message = error_of(tmp_path, '[server]\nport = "eighty"\n')
    assert "[server] port" in message and "integer from 1 to 65535" in message


def test_it_refuses_an_unknown_key(tmp_path):
    message = error_of(tmp_path, "[server]\nprot = 8080\n")
    assert "[server] prot" in message and "unknown key" in message and "port" in message


def test_it_refuses_an_unknown_section(tmp_path):
    assert "[database]" in error_of(tmp_path, "[database]\nurl = 'x'\n")


def test_it_refuses_an_unknown_mail_backend(tmp_path):
    message = error_of(tmp_path, '[mail]\nbackend = "pigeon"\n')
    assert "[mail] backend" in message and '"smtp"' in message


def test_it_refuses_an_unknown_key_in_a_subsection(tmp_path):
    assert "[mail.smtp] hots" in error_of(tmp_path, "[mail.smtp]\nhots = 'x'\n")


@pytest.mark.parametrize(
    ("key", "value"),
    [("session_days", 31), ("magic_link_minutes", 60), ("ip_days", 90), ("slug_hold_days", 61)],
)
def test_it_refuses_retention_longer_than_the_promise(tmp_path, key, value):
    message = error_of(tmp_path, f"[retention]\n{key} = {value}\n")
    assert f"[retention] {key}" in message and "privacy promise" in message


def test_stricter_retention_is_accepted(tmp_path):
    assert load_text(tmp_path, "[retention]\nsession_days = 20\n").retention.session_days == 20


def test_it_refuses_booleans_where_numbers_belong(tmp_path):
    assert "[server] threads" in error_of(tmp_path, "[server]\nthreads = true\n")


def test_it_refuses_a_base_url_with_a_path(tmp_path):
    assert "[server] base_url" in error_of(
        tmp_path, '[server]\nbase_url = "https://x.example/app"\n'
    )


def test_subdomain_mode_needs_a_domain(tmp_path):
    message = error_of(tmp_path, '[server]\nrouting_pages = "subdomain"\n')
    assert "[server] domain" in message


def test_it_reports_invalid_toml_with_the_file(tmp_path):
    assert "not valid TOML" in error_of(tmp_path, "[server\n")


def test_secrets_come_from_files(tmp_path):
    (tmp_path / "smtp-password").write_text("hunter2\n")
    cfg = load_text(tmp_path, '[mail.smtp]\nusername = "u"\npassword_file = "smtp-password"\n')
    assert cfg.mail.smtp.password == "hunter2"
    assert "hunter2" not in config.dump(cfg)
    assert "hunter2" not in repr(cfg)


def test_a_secret_and_its_file_together_are_refused(tmp_path):
    (tmp_path / "pw").write_text("a")
    message = error_of(tmp_path, '[mail.smtp]\npassword = "b"\npassword_file = "pw"\n')
    assert "[mail.smtp] password_file" in message and "not both" in message


def test_a_missing_secret_file_is_named(tmp_path):
    message = error_of(tmp_path, '[mail.resend]\napi_key_file = "nope"\n')
    assert "[mail.resend] api_key_file" in message and "nope" in message


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path):
    cfg = load_text(tmp_path, '[storage]\ndata_dir = "var/data"\n')
    assert cfg.data_dir == tmp_path / "var" / "data"


class TestResolutionOrder:
    def test_explicit_file_wins(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        write_config(tmp_path / "config.toml", {"server": {"port": 1111}})
        explicit = write_config(tmp_path / "other.toml", {"server": {"port": 2222}})
        monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "config.toml"))
        assert config.load(explicit).server.port == 2222

    def test_then_the_environment(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        write_config(tmp_path / "config.toml", {"server": {"port": 1111}})
        env_file = write_config(tmp_path / "env.toml", {"server": {"port": 3333}})
        monkeypatch.setenv(config.ENV_VAR, str(env_file))
        assert config.load().server.port == 3333

    def test_then_the_current_folder(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(config.ENV_VAR, raising=False)
        write_config(tmp_path / "config.toml", {"server": {"port": 1111}})
        cfg = config.load()
        assert cfg.server.port == 1111 and cfg.source == tmp_path / "config.toml"

    def test_then_built_in_defaults_and_it_says_so(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(config.ENV_VAR, raising=False)
        monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "absent" / "config.toml")
        cfg = config.load()
        assert cfg.source is None and "built-in defaults" in cfg.announcement

    def test_a_named_file_that_is_missing_is_an_error(self, tmp_path):
        with pytest.raises(config.ConfigError, match="not found"):
            config.load(tmp_path / "missing.toml")


def test_the_example_config_documents_every_key_and_loads():
    example = ROOT / "config.example.toml"
    assert example.read_text() == config.render_example(), (
        "config.example.toml is out of date: regenerate it with "
        "python -c 'from outofoffice import config; print(config.render_example(), end=\"\")'"
    )
    text = example.read_text()
    for section, (_, keys) in config.SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key.name} = " in text
    cfg = config.from_mapping(config.tomllib.loads(text))
    assert cfg.server.port == 8080


def test_the_dump_hides_secrets_and_parses_back():
    cfg = config.from_mapping({"mail": {"smtp": {"password": "s3cret", "username": "u"}}})
    dumped = config.dump(cfg)
    assert "s3cret" not in dumped and "<redacted>" in dumped
    assert config.tomllib.loads(dumped)["server"]["port"] == 8080


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@x.example",
        "https://x.example#",
        "https://x.example?a=1",
        "https://x .example",
    ],
)
def test_base_url_must_be_only_scheme_host_and_port(tmp_path, url):
    assert "[server] base_url" in error_of(tmp_path, f'[server]\nbase_url = "{url}"\n')


def test_the_resend_api_must_be_https_off_this_machine(tmp_path):
    message = error_of(tmp_path, '[mail.resend]\napi_url = "http://api.resend.com"\n')
    assert "[mail.resend] api_url" in message and "https" in message
    cfg = load_text(tmp_path, '[mail.resend]\napi_url = "http://127.0.0.1:9000"\n')
    assert cfg.mail.resend.api_url == "http://127.0.0.1:9000"


def test_an_smtp_password_is_never_sent_in_the_clear_off_this_machine(tmp_path):
    text = '[mail]\nbackend = "smtp"\n[mail.smtp]\nhost = "smtp.example.com"\n'
    text += 'security = "none"\nusername = "u"\npassword = "p"\n'
    assert "[mail.smtp] security" in error_of(tmp_path, text)


def test_the_sender_is_one_address(tmp_path):
    message = error_of(tmp_path, '[mail]\nfrom = "A <a@b.example>, evil@x.example"\n')
    assert "[mail] from" in message


def test_a_database_password_stays_out_of_dumps_and_displays(tmp_path):
    (tmp_path / "db-url").write_text("postgresql://oop:S3cretPW@db.internal/oop\n")
    cfg = load_text(tmp_path, '[storage]\ndatabase_file = "db-url"\n')
    assert cfg.database_url == "postgresql://oop:S3cretPW@db.internal/oop"
    assert "S3cretPW" not in config.dump(cfg) and "S3cretPW" not in cfg.database_display
    assert cfg.database_display == "postgresql://oop:<redacted>@db.internal/oop"


def test_a_lease_shorter_than_a_slow_send_is_refused(tmp_path):
    path = write_config(
        tmp_path / "config.toml",
        {
            "mail": {"backend": "smtp"},
            "mail.smtp": {"timeout": 60},
            "scheduler": {"lease_seconds": 120},
        },
    )
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert "[scheduler] lease_seconds" in str(caught.value) and "180" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://oop:S3cretPW@db.internal/oop",
        "postgresql://oop:S3cret@PW@db.internal/oop",
        "postgresql://:S3cretPW@db.internal/oop",
        "postgresql://oop@db.internal/oop?sslmode=require&password=S3cretPW",
    ],
)
def test_a_database_password_is_never_shown(url):
    shown = config.display_url(url)
    assert "S3cret" not in shown and "<redacted>" in shown and "db.internal" in shown


TWILIO = '[sms]\nprovider = "twilio"\n[sms.twilio]\n'
SID = 'account_sid = "AC' + "0" * 32 + '"\n'


def test_sms_through_twilio_names_the_key_it_still_needs(tmp_path):
    assert "[sms.twilio] account_sid: is required" in error_of(tmp_path, TWILIO)
    no_token = error_of(tmp_path, TWILIO + SID)
    assert "[sms.twilio] auth_token: is required" in no_token and "auth_token_file" in no_token
    no_sender = error_of(tmp_path, TWILIO + SID + 'auth_token = "t"\n')
    assert "[sms.twilio] from_number: is required" in no_sender
    assert "messaging_service_sid" in no_sender
    both = TWILIO + SID + 'auth_token = "t"\nfrom_number = "+15550100199"\n'
    both += 'messaging_service_sid = "MG' + "0" * 32 + '"\n'
    assert "not both" in error_of(tmp_path, both)
    local = error_of(tmp_path, TWILIO + 'from_number = "555-0100"\n')
    assert "[sms.twilio] from_number" in local and "E.164" in local
    cfg = load_text(tmp_path, TWILIO + SID + 'auth_token = "t"\nfrom_number = "+15550100199"\n')
    assert cfg.sms.twilio.from_number == "+15550100199" and "auth_token='t'" not in repr(cfg)


def test_push_and_webhooks_settings_are_checked(tmp_path):
    message = error_of(tmp_path, '[push]\nntfy_url = "http://ntfy.example.com"\n')
    assert "[push] ntfy_url" in message and "https" in message
    assert "[webhooks] allow_private" in error_of(tmp_path, '[webhooks]\nallow_private = "yes"\n')
    cfg = load_text(tmp_path, '[push]\nntfy_url = "https://ntfy.sh"\n')
    assert cfg.push.ntfy_url == "https://ntfy.sh" and cfg.webhooks.allow_private is False

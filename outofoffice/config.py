"""The configuration: one schema, TOML in, frozen sections out.

Every key has a type, a default, a help text and a validator in ``SCHEMA``; the
example config, the loader, the checks and the redacted dump all read it, so a key
cannot be documented one way and parsed another. Errors name the file, the
``[section]`` and the key, and say what is allowed.
"""

from __future__ import annotations

import json
import keyword
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass, replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from outofoffice import policy
from outofoffice.mail.message import is_address, is_mailbox

ENV_VAR = "OUTOFOFFICE_CONFIG"
SYSTEM_CONFIG = Path("/etc/outofoffice/config.toml")
LOCAL_CONFIG = Path("config.toml")


class ConfigError(Exception):
    """A bad config: the message is one line an admin can act on."""

    def __init__(self, message: str, source: Path | None = None, where: str = ""):
        self.source = source
        self.where = where
        origin = str(source) if source else "built-in defaults"
        super().__init__(f"{origin}: {where}: {message}" if where else f"{origin}: {message}")


# --- validators: each returns a problem ("must be ...") or None -----------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def listen_url(host: str, port: int) -> str:
    """The base_url of a server listening on host:port: one listening on every
    address is reached through this machine's loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - a name
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL such as https://help.example.com, got {value!r}"
    if re.search(r"[\s\"'<>\\?#@]", value) or parts.path not in ("", "/"):
        return f"must be scheme://host[:port] with nothing else, got {value!r}"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"has a bad port: {value!r}"
    return None


def _https_unless_loopback(value: str) -> str | None:
    if problem := _url(value):
        return problem
    parts = urlsplit(value)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        return f"must be https:// (the API key travels with every request), got {value!r}"
    return None


def _https_or_empty(value: str) -> str | None:
    return _https_unless_loopback(value) if value else None


E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _e164_or_empty(value: str) -> str | None:
    if value and not E164.match(value):
        return (
            f"must be a phone number in E.164 form such as +15550100199 (or empty), got {value!r}"
        )
    return None


def _prefixed_or_empty(prefix: str, example: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value and not re.match(rf"^{prefix}[0-9a-fA-F]{{32}}$", value):
            return (
                f"must be {prefix} and 32 hex digits, such as {example} (or empty), got {value!r}"
            )
        return None

    return check


STRIPE_WORD = re.compile(r"[A-Za-z0-9_]+")


def _stripe_secret_key(value: str) -> str | None:
    # never echoed: it is a secret
    if value and not (value.startswith(("sk_", "rk_")) and STRIPE_WORD.fullmatch(value)):
        return "must be a Stripe secret key (sk_...) or restricted key (rk_...)"
    return None


def _webhook_secrets(value: str) -> str | None:
    for line in value.splitlines():
        if line.strip() and not (
            line.strip().startswith("whsec_") and STRIPE_WORD.fullmatch(line.strip())
        ):
            return "must hold webhook signing secrets, whsec_..., one per line"
    return None


def _stripe_price(value: str) -> str | None:
    if value and not (value.startswith("price_") and STRIPE_WORD.fullmatch(value)):
        return f"must be a Stripe price id, price_..., got {value!r}"
    return None


def _ip_or_empty(value: str) -> str | None:
    if not value:
        return None
    try:
        ip_address(value)
    except ValueError:
        return f"must be the IP address of the reverse proxy (or empty), got {value!r}"
    return None


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _domain_or_empty(value: str) -> str | None:
    if value and not _HOSTNAME.match(value):
        return f"must be a domain name such as help.example.com (or empty), got {value!r}"
    return None


def _email(value: str) -> str | None:
    return None if is_address(value) else f"must be one email address, got {value!r}"


def _mailbox(value: str) -> str | None:
    if not is_mailbox(value):
        return f'must be one address such as "Firm <noreply@example.com>", got {value!r}'
    return None


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _database(value: str) -> str | None:
    if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return (
            f"must be empty (SQLite in data_dir), sqlite:///PATH or postgresql://..., got {value!r}"
        )
    return None


def _ga_id(value: str) -> str | None:
    if value and not re.match(r"^(G|UA|GT|AW)-[A-Z0-9-]{4,20}$", value):
        return f"must be empty or a Google Analytics id such as G-ABC123XYZ, got {value!r}"
    return None


@dataclass(frozen=True)
class Key:
    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[Any], str | None] | None = None
    secret: bool = False  # redacted in dumps; may come from a "<name>_file"
    path: bool = False  # relative values resolve against the config file's folder
    promise: str = ""  # the privacy promise a larger value would break

    @property
    def attr(self) -> str:
        return f"{self.name}_" if keyword.iskeyword(self.name) else self.name


def _retention(name: str, default: int, unit: str, what: str, minimum: int = 1) -> Key:
    return Key(
        name,
        int,
        default,
        f"{what}, in {unit}; at most {default} (the privacy promise)",
        minimum=minimum,
        maximum=default,
        promise=f"{default} {unit}",
    )


def _limit(name: str, default: int, what: str) -> Key:
    return Key(name, int, default, what, minimum=1, maximum=1_000_000)


SCHEMA: dict[str, tuple[str, tuple[Key, ...]]] = {
    "server": (
        "The web server.",
        (
            Key(
                "base_url",
                str,
                "http://127.0.0.1:8080",
                "Public URL of this instance; every emailed or printed link starts with it. "
                "https:// turns on Secure cookies and HSTS. Left out, it is "
                "http://<host>:<port> where `serve` listens (--host and --port included), "
                "and commands run beside a running `serve` print links to it.",
                check=_url,
            ),
            Key("host", str, "127.0.0.1", "Address to listen on.", check=_nonempty),
            Key("port", int, 8080, "Port to listen on.", minimum=1, maximum=65535),
            Key("threads", int, 8, "Worker threads serving requests.", minimum=1, maximum=256),
            Key(
                "processes",
                int,
                1,
                "Web processes `serve` runs on this machine, sharing its listening socket "
                "(one of them also runs the scheduler); 0: one per CPU core. More than one "
                "lets a busy installation use every core.",
                minimum=0,
                maximum=64,
            ),
            Key(
                "trusted_proxy",
                str,
                "",
                "IP address of a reverse proxy whose X-Forwarded-* headers are honoured; "
                "empty: those headers are ignored.",
                check=_ip_or_empty,
            ),
            Key(
                "routing_pages",
                str,
                "path",
                'Where routing pages live: "path" = <base_url>/r/<slug>, '
                '"subdomain" = <scheme>://<slug>.<domain>/.',
                choices=("path", "subdomain"),
            ),
            Key(
                "domain",
                str,
                "",
                "Parent domain of the routing pages; required in subdomain mode.",
                check=_domain_or_empty,
            ),
            Key(
                "signup",
                str,
                "open",
                'Who may create an account: "open" = anyone, "invite" = holders of an '
                'invitation from "outofoffice accounts invite", "closed" = only the admin '
                '("outofoffice accounts create").',
                choices=("open", "invite", "closed"),
            ),
            Key(
                "connection_limit",
                int,
                1000,
                "Open connections the server holds in all; beyond it new ones wait in the "
                "kernel's queue until one closes.",
                minimum=10,
                maximum=100_000,
            ),
            Key(
                "connections_per_address",
                int,
                20,
                "Open connections one client address (an IPv6 client: its /64, and its /48 "
                "four times this) may hold; more are closed at once, so one client cannot "
                "take every connection. The "
                "trusted_proxy's address is not limited: set the proxy's own per-client "
                "limits (docs/reverse-proxy.md).",
                minimum=1,
                maximum=100_000,
            ),
            Key(
                "channel_timeout",
                int,
                30,
                "Seconds a connection may stay idle (nothing received, nothing to send) "
                "before it is closed; a request must also arrive whole within this many "
                "seconds of its first byte.",
                minimum=1,
                maximum=3600,
            ),
            Key(
                "cleanup_interval",
                int,
                5,
                "How often, in seconds, idle connections are looked for and closed.",
                minimum=1,
                maximum=3600,
            ),
            Key(
                "asyncore_use_poll",
                bool,
                True,
                "Watch connections with epoll (poll() where there is none) rather than "
                "select(), which cannot watch more than 1,024 at once.",
            ),
        ),
    ),
    "operator": (
        "Who runs this instance; shown on /privacy and in emails.",
        (
            Key("name", str, "Out of Office Pro", "Operator name.", check=_nonempty),
            Key("contact_email", str, "admin@localhost", "Operator contact.", check=_email),
        ),
    ),
    "storage": (
        "Where data lives.",
        (
            Key(
                "data_dir",
                str,
                "./outofoffice-data",
                "Data folder: the database, the secret key, the mail folder. A relative "
                "path is taken from the config file's folder (or the current folder when "
                "running on built-in defaults).",
                check=_nonempty,
                path=True,
            ),
            Key(
                "database",
                str,
                "",
                "Database URL; empty means SQLite at <data_dir>/outofoffice.db, else "
                "postgresql://USER@HOST[:PORT]/DB (PostgreSQL 15 or newer). A URL with a "
                "password is better kept in database_file, or the password in password_file.",
                check=_database,
                secret=True,
            ),
            Key(
                "password",
                str,
                "",
                "PostgreSQL password, when the URL carries none (or use password_file).",
                secret=True,
            ),
            Key(
                "pool_size",
                int,
                8,
                "Connections each process keeps open to PostgreSQL.",
                minimum=1,
                maximum=200,
            ),
            Key(
                "write_wait_seconds",
                int,
                5,
                "How long a request waits for the database's write lock (SQLite) before it "
                "answers 503 with the firm's phone number and keeps what the caller typed.",
                minimum=1,
                maximum=60,
            ),
        ),
    ),
    "scheduler": (
        "Background work: delivery, silence timers, digests, sweeps.",
        (
            Key(
                "lease_seconds",
                int,
                120,
                "How long one process holds a message or timer it claimed; a process that "
                "dies lets go of its claims after this (PostgreSQL).",
                minimum=10,
                maximum=3600,
            ),
        ),
    ),
    "health": (
        "When /healthz and `outofoffice check` report a fault (503 with the reason).",
        (
            Key(
                "mail_failing_seconds",
                int,
                60,
                "Mail (or SMS, or push) has failed, with no message getting through, for "
                "longer than this.",
                minimum=1,
                maximum=86_400,
            ),
            Key(
                "oldest_due_seconds",
                int,
                120,
                "The oldest message due to be sent has waited longer than this.",
                minimum=1,
                maximum=86_400,
            ),
            Key(
                "min_free_mb",
                int,
                256,
                "Free space on the data folder's disk, in MiB, is under this "
                "(`check` warns below twice this).",
                minimum=0,
                maximum=10_000_000,
            ),
        ),
    ),
    "security": (
        "Keys.",
        (
            Key(
                "secret_key_file",
                str,
                "",
                "File holding the secret key; empty means <data_dir>/secret.key, created "
                "with mode 0600 on first start.",
                path=True,
            ),
        ),
    ),
    "mail": (
        "Outgoing email.",
        (
            Key(
                "backend",
                str,
                "console",
                '"console" prints messages to the log, "file" writes .eml files, '
                '"smtp" and "resend" send them.',
                choices=("console", "file", "smtp", "resend"),
            ),
            Key(
                "from",
                str,
                "Out of Office Pro <noreply@localhost>",
                "Sender of every email.",
                check=_mailbox,
            ),
        ),
    ),
    "mail.file": (
        "The file backend: one RFC 5322 .eml file per message.",
        (
            Key(
                "path",
                str,
                "",
                "Folder for .eml files; empty means <data_dir>/mail.",
                path=True,
            ),
        ),
    ),
    "mail.smtp": (
        "The smtp backend.",
        (
            Key("host", str, "localhost", "SMTP server.", check=_nonempty),
            Key("port", int, 587, "SMTP port.", minimum=1, maximum=65535),
            Key("username", str, "", "Login name; empty means no login."),
            Key("password", str, "", "Password (or use password_file).", secret=True),
            Key(
                "security",
                str,
                "starttls",
                '"starttls" upgrades the connection, "ssl" connects with TLS, '
                '"none" sends in the clear (loopback relays only).',
                choices=("starttls", "ssl", "none"),
            ),
            Key("timeout", int, 10, "Seconds to wait for the server.", minimum=1, maximum=300),
            Key(
                "connections",
                int,
                4,
                "SMTP connections open at once: emails go out side by side, so one the "
                "server is slow to take holds back no other; each is kept open while "
                "mail flows and closed after 30 s unused.",
                minimum=1,
                maximum=32,
            ),
        ),
    ),
    "mail.resend": (
        "The resend backend.",
        (
            Key("api_key", str, "", "Resend API key (or use api_key_file).", secret=True),
            Key(
                "api_url",
                str,
                "https://api.resend.com",
                "Resend API address; https:// unless on this machine.",
                check=_https_unless_loopback,
            ),
        ),
    ),
    "retention": (
        "How long personal data is kept. The defaults are the privacy promises; "
        "a longer period is refused.",
        (
            _retention(
                "magic_link_minutes", policy.MAGIC_LINK_MINUTES, "minutes", "Sign-in links live"
            ),
            _retention("session_days", policy.SESSION_DAYS, "days", "Sessions live"),
            _retention("ip_days", policy.IP_DAYS, "days", "IP addresses are kept"),
            _retention(
                "server_log_days", policy.SERVER_LOG_DAYS, "days", "Raw server logs are kept"
            ),
            _retention(
                "slug_hold_days",
                policy.SLUG_HOLD_DAYS,
                "days",
                "A cancelled or deleted account's slug is held",
            ),
            _retention(
                "deletion_days",
                policy.DELETION_DAYS,
                "days",
                "A requested account deletion is done within",
                minimum=0,
            ),
        ),
    ),
    "abuse": (
        "Rate limits.",
        (
            _limit("dispatches_per_ip_per_hour", 10, "Requests one address may send per hour."),
            _limit(
                "dispatches_per_account_per_hour", 200, "Requests one firm may receive per hour."
            ),
            _limit(
                "login_emails_per_address_per_hour", 5, "Sign-in emails to one address per hour."
            ),
            _limit("login_emails_per_ip_per_hour", 20, "Sign-in emails one IP may ask for."),
        ),
    ),
    "sms": (
        "Text messages to vendors (and, where the firm turns it on, to callers).",
        (
            Key(
                "provider",
                str,
                "none",
                '"none" sends no SMS; "twilio" sends them through Twilio (docs/channels.md).',
                choices=("none", "twilio"),
            ),
        ),
    ),
    "sms.twilio": (
        "Twilio: the account, and the number or messaging service that sends.",
        (
            Key(
                "account_sid",
                str,
                "",
                "The account SID (AC...), from the Twilio console.",
                check=_prefixed_or_empty("AC", "AC" + "0" * 32),
            ),
            Key("auth_token", str, "", "The auth token (or use auth_token_file).", secret=True),
            Key(
                "from_number",
                str,
                "",
                "The sending number in E.164 form (+15550100199), or set messaging_service_sid.",
                check=_e164_or_empty,
            ),
            Key(
                "messaging_service_sid",
                str,
                "",
                "A messaging service (MG...) that picks the sending number, instead of "
                "from_number.",
                check=_prefixed_or_empty("MG", "MG" + "0" * 32),
            ),
            Key(
                "api_url",
                str,
                "https://api.twilio.com",
                "Twilio's API address; https:// unless on this machine.",
                check=_https_unless_loopback,
            ),
        ),
    ),
    "push": (
        "Push notifications through ntfy, with Accept and Decline buttons.",
        (
            Key(
                "ntfy_url",
                str,
                "",
                "An ntfy server, https://ntfy.sh or your own; empty means no push.",
                check=_https_or_empty,
            ),
            Key(
                "ntfy_token",
                str,
                "",
                "An access token for a protected ntfy server (or use ntfy_token_file).",
                secret=True,
            ),
        ),
    ),
    "webhooks": (
        "Webhooks owners add on /dashboard/webhooks.",
        (
            Key(
                "allow_private",
                bool,
                False,
                "true lets owners add http:// endpoints and private or loopback addresses "
                "(a firm's own network); keep it false where owners are strangers.",
            ),
        ),
    ),
    "billing": (
        "Billing: trials and subscriptions through Stripe, for an installation that serves "
        "many firms (docs/billing.md). No caller is ever turned away for billing.",
        (
            Key(
                "provider",
                str,
                "none",
                '"none" (no billing at all) or "stripe".',
                choices=("none", "stripe"),
            ),
            Key("trial_days", int, 14, "Days of trial from signup.", minimum=1, maximum=365),
            Key(
                "grace_days",
                int,
                14,
                "Days of full service after a trial or a subscription ends, before limited mode.",
                minimum=0,
                maximum=365,
            ),
        ),
    ),
    "billing.stripe": (
        "Stripe: the secret key, the webhook signing secrets and the price to subscribe to.",
        (
            Key(
                "secret_key",
                str,
                "",
                "The secret (or restricted) key, sk_... or rk_...; better as secret_key_file.",
                secret=True,
                check=_stripe_secret_key,
            ),
            Key(
                "webhook_secret",
                str,
                "",
                "The webhook signing secret, whsec_...; in webhook_secret_file one per line "
                "(old and new while rotating).",
                secret=True,
                check=_webhook_secrets,
            ),
            Key(
                "price_id",
                str,
                "",
                "The price owners subscribe to, price_...",
                check=_stripe_price,
            ),
            Key(
                "api_url",
                str,
                "https://api.stripe.com",
                "Stripe's API address; https:// unless on this machine.",
                check=_https_unless_loopback,
            ),
        ),
    ),
    "analytics": (
        "Analytics, only on the marketing pages (/ and /privacy), never for browsers "
        "that send DNT or Sec-GPC.",
        (
            Key(
                "google_analytics_id",
                str,
                "",
                "Google Analytics id; empty means none.",
                check=_ga_id,
            ),
        ),
    ),
}

FILE_SUFFIX = "_file"


def default(section: str, name: str) -> Any:
    return next(k.default for k in SCHEMA[section][1] if k.name == name)


def _section_type(section: str) -> type:
    keys = SCHEMA[section][1]
    fields = [(k.attr, k.kind, field(repr=not k.secret)) for k in keys]
    subs = [s.split(".", 1)[1] for s in SCHEMA if s.startswith(section + ".")]
    fields += [(sub, Any) for sub in subs]
    name = "".join(p.capitalize() for p in section.split(".")) + "Section"
    return make_dataclass(name, fields, frozen=True)


_TYPES = {section: _section_type(section) for section in SCHEMA}
TOP_SECTIONS = [s for s in SCHEMA if "." not in s]


@dataclass(frozen=True)
class Config:
    """A validated configuration. Paths in it are absolute."""

    source: Path | None
    server: Any
    operator: Any
    storage: Any
    scheduler: Any
    health: Any
    security: Any
    mail: Any
    retention: Any
    abuse: Any
    sms: Any
    push: Any
    webhooks: Any
    billing: Any
    analytics: Any
    # "config": base_url is set; "default": left out, so http://<host>:<port>, which a
    # running `serve` may know better; "serve": this process listens at it
    base_url_source: str = "config"

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def database_url(self) -> str:
        return self.storage.database or f"sqlite:///{self.data_dir / 'outofoffice.db'}"

    @property
    def database_display(self) -> str:
        """The database URL with any password hidden, for logs and `check`."""
        return display_url(self.database_url)

    @property
    def secret_key_path(self) -> Path:
        return Path(self.security.secret_key_file or self.data_dir / "secret.key")

    @property
    def mail_dir(self) -> Path:
        return Path(self.mail.file.path or self.data_dir / "mail")

    @property
    def base_url(self) -> str:
        return self.server.base_url.rstrip("/")

    @property
    def follows_serve(self) -> bool:
        """base_url is left out: a `serve` on another port knows the address that opens."""
        return self.base_url_source == "default"

    def serving(self, host: str, port: int) -> Config:
        """This config as `serve` listening on host:port uses it: a base_url left out
        follows the address actually served, so links and the Origin check match it.
        ValueError: no URL can name that host."""
        server = replace(self.server, host=host, port=port)
        if self.base_url_source == "config":
            return replace(self, server=server)
        url = listen_url(host, port)
        if _url(url):
            raise ValueError(f"must be an IP address or a host name, got {host!r}")
        return replace(self, server=replace(server, base_url=url), base_url_source="serve")

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def announcement(self) -> str:
        if self.source:
            return f"using config file {self.source}"
        return (
            f"no config file found ({', '.join(str(p) for p in search_path())}); running on "
            f"built-in defaults: data in {self.data_dir}, {self.mail.backend} mailer"
        )


def _describe(key: Key) -> str:
    if key.choices:
        return "one of " + ", ".join(f'"{c}"' for c in key.choices)
    if key.kind is int:
        return f"an integer from {key.minimum} to {key.maximum}"
    if key.kind is bool:
        return "true or false"
    return "a string"


def _value(key: Key, raw: Any, err: Callable[[str], ConfigError]) -> Any:
    if key.kind is int and (isinstance(raw, bool) or not isinstance(raw, int)):
        raise err(f"must be {_describe(key)}, got {raw!r}")
    if key.kind is not int and not isinstance(raw, key.kind):
        raise err(f"must be {_describe(key)}, got {raw!r}")
    if key.choices and raw not in key.choices:
        raise err(f"must be {_describe(key)}, got {raw!r}")
    if key.kind is int and not (key.minimum <= raw <= key.maximum):
        if key.promise and raw > key.maximum:
            raise err(
                f"{raw} is longer than the privacy promise of {key.promise}; "
                f"use {key.minimum} to {key.maximum}"
            )
        raise err(f"must be {_describe(key)}, got {raw!r}")
    if key.check and (problem := key.check(raw)):
        raise err(problem)
    return raw


def _read_secret_file(path: Path, err: Callable[[str], ConfigError]) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise err(f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise err(f"{path} is empty")
    return value


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Validate parsed TOML into a Config; raises ConfigError on the first problem."""
    base = source.parent if source else Path.cwd()

    def error_for(section: str, name: str = "") -> Callable[[str], ConfigError]:
        where = f"[{section}] {name}".strip()
        return lambda message: ConfigError(message, source, where)

    for name, value in data.items():
        if name not in TOP_SECTIONS:
            raise error_for(name)(
                "unknown section; known sections: " + ", ".join(f"[{s}]" for s in TOP_SECTIONS)
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a [{name}] section", source, name)

    def build(section: str, table: Mapping[str, Any]) -> Any:
        keys = {k.name: k for k in SCHEMA[section][1]}
        subs = {s.split(".", 1)[1]: s for s in SCHEMA if s.startswith(section + ".")}
        secrets = {f"{k.name}{FILE_SUFFIX}": k for k in keys.values() if k.secret}
        values: dict[str, Any] = {}
        for name, raw in table.items():
            if name in subs:
                if not isinstance(raw, dict):
                    raise error_for(section, name)(f"must be a [{subs[name]}] section")
                continue
            if name in secrets:
                if not isinstance(raw, str):
                    raise error_for(section, name)(f"must be a file path, got {raw!r}")
                continue
            if name not in keys:
                known = sorted([*keys, *secrets, *subs])
                raise error_for(section, name)("unknown key; known keys: " + ", ".join(known))
            values[name] = _value(keys[name], raw, error_for(section, name))
        for file_key, key in secrets.items():
            if table.get(file_key):
                err = error_for(section, file_key)
                if table.get(key.name):
                    raise err(f"set {key.name} or {file_key}, not both")
                secret = _read_secret_file(base / table[file_key], err)
                if key.check and (problem := key.check(secret)):
                    raise err(f"{table[file_key]}: {problem}")
                values[key.name] = secret
        given = set(values)
        for key in keys.values():
            raw = values.get(key.name, key.default)
            if key.path and raw:
                raw = str(((base if key.name in given else Path.cwd()) / raw).resolve())
            values[key.name] = raw
        kwargs = {keys[n].attr: v for n, v in values.items()}
        for sub, full in subs.items():
            kwargs[sub] = build(full, table.get(sub, {}))
        return _TYPES[section](**kwargs)

    sections = {s: build(s, data.get(s, {})) for s in TOP_SECTIONS}
    source_of_url = "config"
    if "base_url" not in data.get("server", {}):
        server = sections["server"]
        url = listen_url(server.host, server.port)
        if _url(url):
            raise error_for("server", "host")(
                f"must be an IP address or a host name (or set base_url), got {server.host!r}"
            )
        sections["server"] = replace(server, base_url=url)
        source_of_url = "default"
    config = Config(source=source, base_url_source=source_of_url, **sections)
    _cross_check(config, error_for)
    return config


def display_url(url: str) -> str:
    """A database URL fit to show: a password in it, before the host or as a query
    parameter, is replaced by <redacted>."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:<redacted>@{host}" if colon else netloc
    query = "&".join(
        f"{key}=<redacted>" if key.lower() == "password" else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return parts._replace(netloc=netloc, query=query).geturl()


def _cross_check(config: Config, error_for: Callable[..., Callable[[str], ConfigError]]) -> None:
    if config.storage.password:
        if not config.database_url.startswith(("postgresql://", "postgres://")):
            raise error_for("storage", "password")(
                'is for a PostgreSQL database; set database = "postgresql://USER@HOST/DB"'
            )
        if urlsplit(config.database_url).password:
            raise error_for("storage", "password")("the database URL has a password already")
    if config.server.routing_pages == "subdomain" and not config.server.domain:
        raise error_for("server", "domain")('is required when routing_pages = "subdomain"')
    smtp = config.mail.smtp
    if (
        config.mail.backend == "smtp"
        and smtp.security == "none"
        and smtp.password
        and not is_loopback(smtp.host)
    ):
        raise error_for("mail.smtp", "security")(
            f'"none" would send the password in the clear to {smtp.host}; use "starttls" or "ssl"'
        )
    lease = config.scheduler.lease_seconds
    if config.mail.backend == "smtp" and lease < 3 * smtp.timeout:
        raise error_for("scheduler", "lease_seconds")(
            f"must be at least 3 x [mail.smtp] timeout ({3 * smtp.timeout}), so that one "
            f"slow send never outlasts its claim, got {lease}"
        )
    stripe = config.billing.stripe
    if config.billing.provider == "stripe":
        for name in ("secret_key", "webhook_secret", "price_id"):
            if not getattr(stripe, name):
                also = f" (or set {name}_file)" if name != "price_id" else ""
                raise error_for("billing.stripe", name)(
                    f'is required when [billing] provider = "stripe"{also}'
                )
    twilio = config.sms.twilio
    if config.sms.provider == "twilio":
        for name in ("account_sid", "auth_token"):
            if not getattr(twilio, name):
                also = " (or set auth_token_file)" if name == "auth_token" else ""
                raise error_for("sms.twilio", name)(
                    f'is required when [sms] provider = "twilio"{also}'
                )
        if not (twilio.from_number or twilio.messaging_service_sid):
            raise error_for("sms.twilio", "from_number")(
                'is required when [sms] provider = "twilio" (or set messaging_service_sid)'
            )
        if twilio.from_number and twilio.messaging_service_sid:
            raise error_for("sms.twilio", "from_number")(
                "set from_number or messaging_service_sid, not both"
            )
    if config.mail.backend == "resend" and not config.mail.resend.api_key:
        raise error_for("mail.resend", "api_key")(
            'is required when backend = "resend" (or set api_key_file)'
        )


def search_path(env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    found = [Path(env[ENV_VAR])] if env.get(ENV_VAR) else []
    return [*found, LOCAL_CONFIG, SYSTEM_CONFIG]


def locate(explicit: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to use, by SPEC section 4's order; None means built-in defaults."""
    env = os.environ if env is None else env
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError("config file not found (given with --config)", path)
        return path.resolve()
    if env.get(ENV_VAR):
        path = Path(env[ENV_VAR])
        if not path.is_file():
            raise ConfigError(f"config file not found (named by ${ENV_VAR})", path)
        return path.resolve()
    for path in (LOCAL_CONFIG, SYSTEM_CONFIG):
        if path.is_file():
            return path.resolve()
    return None


def load(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    path = locate(explicit, env)
    if path is None:
        return from_mapping({})
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    return from_mapping(data, path)


# --- writing TOML: the example, the dump, the file init writes ----------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str, width: int = 88) -> list[str]:
    lines, line = [], "#"
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = "#"
        line += " " + word
    return [*lines, line]


def render_example() -> str:
    """config.example.toml: every key, its default and its help, from the schema."""
    out = [
        "# Out of Office Pro configuration. Every key is shown with its default value.",
        "# Copy the keys you change to /etc/outofoffice/config.toml (or ./config.toml).",
        "# Unknown keys and bad values are refused with an error naming the key.",
    ]
    for section, (help_text, keys) in SCHEMA.items():
        out += ["", *_comment(help_text), f"[{section}]"]
        for key in keys:
            out += _comment(key.help)
            out.append(f"{key.name} = {_toml_value(key.default)}")
            if key.secret:
                out += [
                    f'# {key.name}{FILE_SUFFIX} = ""  '
                    f"# a file holding {key.name}, instead of {key.name}"
                ]
    return "\n".join(out) + "\n"


def dump(config: Config) -> str:
    """The effective configuration as TOML, secrets redacted."""
    out: list[str] = []
    for section, (_, keys) in SCHEMA.items():
        obj: Any = config
        for part in section.split("."):
            obj = getattr(obj, part)
        out += ["", f"[{section}]"] if out else [f"[{section}]"]
        for key in keys:
            value = getattr(obj, key.attr)
            shown = "<redacted>" if key.secret and value else value
            out.append(f"{key.name} = {_toml_value(shown)}")
    return "\n".join(out) + "\n"


def initial_server(base_url: str | None) -> dict[str, Any]:
    """[server] keys for `init`: a plain-http base_url with a port is served directly,
    so listen on that port; anything else sits behind a proxy on the default port.
    Without one, base_url stays out and follows where `serve` listens."""
    if base_url is None:
        return {}
    server: dict[str, Any] = {"base_url": base_url}
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        return server  # from_mapping reports the bad URL
    if parts.scheme == "http" and port:
        server["port"] = port
    return server


def render_initial(server: Mapping[str, Any], data_dir: Path) -> str:
    """The small config file `outofoffice init` writes."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in server.items()] or [
        '# base_url = "https://help.example.com"  # left out: http://<host>:<port> of `serve`'
    ]
    return (
        "# Out of Office Pro configuration, written by `outofoffice init`.\n"
        "# Every other key and its default: config.example.toml.\n\n"
        "[server]\n" + "\n".join(lines) + "\n\n"
        f"[storage]\ndata_dir = {_toml_value(str(data_dir))}\n"
    )

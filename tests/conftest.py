"""Shared fixtures: a config and data dir per test, the app, a mailbox, owners.

Every test gets its own data dir under tmp_path and the file mailer, so emails are
real .eml files that a test reads like a person would read their inbox.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import webtest

from outofoffice import accounts, clock, config, db, dispatch, outbox, owner_setup
from outofoffice.instance import Instance
from outofoffice.models import Category, WebhookEndpoint
from outofoffice.web import create_app
from tests import postgres
from tests.servers import ServerProcess
from tests.smtp_sink import free_port

DATA = Path(__file__).resolve().parent / "data"  # the SPEC's sample export, among others
LINK = re.compile(r"https?://[^\s\"<>]+/auth/[A-Za-z0-9_-]+")


def toml_text(sections: dict) -> str:
    out = []
    for section, values in sections.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            out.append(f"{key} = {config._toml_value(value)}")
        out.append("")
    return "\n".join(out)


def write_config(path: Path, sections: dict) -> Path:
    path.write_text(toml_text(sections))
    return path


# The database of the running test: "" for SQLite in its data dir, or the URL of the
# PostgreSQL database made for it (see the ``database_kind`` fixture).
DATABASE = {"url": ""}


def base_sections(tmp_path: Path, **overrides) -> dict:
    storage = {"data_dir": str(tmp_path / "data")}
    if DATABASE["url"]:
        storage["database"] = DATABASE["url"]
    sections = {
        # every test client comes from 127.0.0.1: callers the product would tell apart
        # by address are many here (tests/faults/test_connection_flood.py tests the cap)
        "server": {"base_url": "http://oop.example.test", "connections_per_address": 1000},
        "storage": storage,
        "mail": {"backend": "file", "from": "Out of Office Pro <noreply@oop.example.test>"},
    }
    for name, values in overrides.items():
        sections.setdefault(name.replace("__", "."), {}).update(values)
    return sections


def served_config(tmp_path: Path, port: int, **overrides) -> Path:
    """config.toml for a real `serve` on a loopback port (file mailer unless overridden)."""
    sections = base_sections(tmp_path, server={"base_url": f"http://127.0.0.1:{port}"}, **overrides)
    return write_config(tmp_path / "config.toml", sections)


def pytest_generate_tests(metafunc):
    """Every test runs on SQLite and on PostgreSQL, but those marked sqlite_only (about
    SQLite's own machinery) or no_database (they never open one), and postgresql_only
    (many processes on one database)."""
    if "database_kind" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    single = node.get_closest_marker("sqlite_only") or node.get_closest_marker("no_database")
    kinds = ["sqlite"] if single else ["sqlite", "postgresql"]
    if node.get_closest_marker("postgresql_only"):
        kinds = ["postgresql"]
    metafunc.parametrize("database_kind", kinds, indirect=True)


@pytest.fixture(scope="session")
def postgres_cluster():
    bin_dir = postgres.binaries()
    if bin_dir is None:
        if os.environ.get(postgres.REQUIRE):
            pytest.fail("PostgreSQL is not installed (apt-get install -y postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    cluster = postgres.Cluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def database_kind(request):
    """The database this test runs on; on PostgreSQL a new database of its own."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    DATABASE["url"] = cluster.url(name)
    try:
        yield "postgresql"
    finally:
        DATABASE["url"] = ""
        if db.database.obj is not None:
            db.close_all()
        cluster.drop_database(name)


@pytest.fixture(autouse=True)
def _fresh_clock():
    clock.reset()
    yield
    clock.reset()


def at_local(account, hour: int, minute: int = 0) -> datetime:
    """Move the clock forward to the next moment the account's clock shows hour:minute,
    so a test's days never depend on when it runs."""
    zone = ZoneInfo(account.timezone)
    local = clock.now().replace(tzinfo=UTC).astimezone(zone)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local:
        target = (target + timedelta(days=1)).replace(hour=hour, minute=minute)
    clock.advance(target.astimezone(UTC) - local.astimezone(UTC))
    return clock.now()


class Clock:
    def advance(self, **kwargs) -> None:
        clock.advance(timedelta(**kwargs))


@pytest.fixture
def clock_():
    return Clock()


@pytest.fixture
def make_instance(tmp_path):
    """Open an instance on a config with the given section overrides."""

    def make(**overrides) -> Instance:
        path = write_config(tmp_path / "config.toml", base_sections(tmp_path, **overrides))
        return Instance.open(config.load(path), migrate=True, create=True)

    return make


@pytest.fixture
def instance(make_instance) -> Instance:
    return make_instance()


@pytest.fixture
def conn(instance):
    with db.connection():
        yield


def dump_database() -> str:
    """Every stored value of every table, as text: what someone with the database alone
    (a copy of the SQLite file, a pg_dump) would read."""
    from outofoffice.models import MODELS

    lines = []
    for model in MODELS:
        table = model._meta.table_name
        for row in db.database.execute_sql(f'SELECT * FROM "{table}"').fetchall():  # noqa: S608
            lines.append(f"{table}: " + " | ".join(map(str, row)))
    return "\n".join(lines)


def as_imported(vendors: list[dict]) -> list[dict]:
    """An export's vendors without their push topics, once it is clear each has its own
    (a file from before channels gets new ones), to compare with the file imported."""
    topics = [v["push_topic"] for v in vendors]
    assert len(set(topics)) == len(topics) and all(t.startswith("ooo-") for t in topics)
    return [{k: v for k, v in vendor.items() if k != "push_topic"} for vendor in vendors]


def webhook_endpoint(instance: Instance, account) -> WebhookEndpoint:
    """An endpoint of the account's, made as the dashboard stores one (its URL is not
    resolved: these tests never deliver to it)."""
    return WebhookEndpoint.create(
        account=account,
        url="https://hooks.example.com/dispatches",
        secret=instance.keys.encrypt("whsec_" + "A" * 43),
        events=["dispatch.created"],
    )


def deliver(instance: Instance) -> dict[str, int]:
    """Deliver what is due, pass after pass, as the scheduler's job does."""
    total = dict.fromkeys(("sent", "retry", "dead", "released"), 0)
    with db.connection():
        while True:
            counts = dispatch.deliver_outbox(instance)
            total = {k: total[k] + counts[k] for k in total}
            if not outbox.more_due(counts):
                return total


class Mailbox:
    """Delivers the outbox through the file mailer and reads the .eml files back."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.seen: set[Path] = set()

    def deliver(self) -> list[email.message.EmailMessage]:
        deliver(self.instance)
        folder = self.instance.config.mail_dir
        new = (
            sorted(p for p in folder.glob("*.eml") if p not in self.seen) if folder.exists() else []
        )
        self.seen.update(new)
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in new]

    @staticmethod
    def text(message) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()

    def links(self) -> list[str]:
        return [link for m in self.deliver() for link in LINK.findall(self.text(m))]


@pytest.fixture
def mailbox(instance) -> Mailbox:
    return Mailbox(instance)


class Client(webtest.TestApp):
    """WebTest as a browser: it asks for the configured host, and a POST to a routing
    page carries the form token from that page, as a caller who loaded it would."""

    def __init__(self, wsgi, **kwargs):
        base_url = wsgi.config["outofoffice.instance"].config.base_url
        extra = {"HTTP_HOST": urlsplit(base_url).netloc} | kwargs.pop("extra_environ", {})
        super().__init__(wsgi, extra_environ=extra, **kwargs)

    def post(self, url, params="", *args, **kwargs):
        if url.startswith("/r/") and isinstance(params, dict) and "form_token" not in params:
            environ = {k: kwargs[k] for k in ("headers", "extra_environ") if k in kwargs}
            page = self.get(url, status="*", **environ)
            token = page.html.find("input", {"name": "form_token"})
            params = params | ({"form_token": token["value"]} if token else {})
        return super().post(url, params, *args, **kwargs)


def client(instance: Instance, **kwargs) -> Client:
    return Client(create_app(instance.config, instance), **kwargs)


@pytest.fixture
def app(instance) -> Client:
    return client(instance)


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


ALPHA = {
    "email": "ann@alpha.example",
    "name": "Ann Alpha",
    "business_name": "Alpha Properties",
    "slug": "alpha",
    "industry": "property_management",
    "timezone": "Europe/London",
}
BETA = {
    "email": "bob@beta.example",
    "name": "Bob Beta",
    "business_name": "Beta Legal",
    "slug": "beta",
    "industry": "legal",
    "timezone": "America/New_York",
}


def make_owners():
    """Alpha and Beta, for tests that open their own instance."""
    return accounts.create_account(**ALPHA), accounts.create_account(**BETA)


@pytest.fixture
def owners(conn):
    """Two owners. Alpha and Beta are separate firms: neither may see the other's data."""
    return make_owners()


def sign_in(app: webtest.TestApp, instance: Instance, account) -> webtest.TestResponse:
    with db.connection():
        url = accounts.login_link(instance, account)
    return app.post(path_of(url)).follow()


def csrf_of(response) -> str:
    return response.html.find("input", {"name": "csrf_token"})["value"]


@pytest.fixture
def firm(owners):
    """Alpha's routing: two plumbers for leaks (Vera first, then Walt), a locksmith for
    lock-outs, and Elm Street among the properties. Beta has nothing set up."""
    alpha, _ = owners
    kinds = owner_setup.KINDS
    vera = owner_setup.save(
        alpha,
        kinds["vendors"],
        {"name": "Vera Plumb", "email": "vera@plumb.example", "phone": "+1 555 0101"},
    )
    walt = owner_setup.save(
        alpha, kinds["vendors"], {"name": "Walt Water", "email": "walt@water.example"}
    )
    lock = owner_setup.save(
        alpha, kinds["vendors"], {"name": "Lou Locks", "email": "lou@locks.example"}
    )
    elm = owner_setup.save(alpha, kinds["subjects"], {"name": "Elm Street", "address": "12 Elm St"})
    oak = owner_setup.save(alpha, kinds["subjects"], {"name": "Oak Court", "address": "8 Oak Ct"})
    plumbing = Category.get(Category.account == alpha, Category.name == "Plumbing")
    locked = Category.get(Category.account == alpha, Category.name == "Locked out")
    owner_setup.create_route(alpha, "", str(plumbing.id), "always", [str(vera.id), str(walt.id)])
    owner_setup.create_route(alpha, "", str(locked.id), "always", [str(lock.id)])
    return {
        "account": alpha,
        "vera": vera,
        "walt": walt,
        "lock": lock,
        "elm": elm,
        "oak": oak,
        "plumbing": plumbing,
        "locked": locked,
    }


def request_form(firm, **overrides) -> dict:
    form = {
        "subject": str(firm["elm"].id),
        "category": str(firm["plumbing"].id),
        "name": "Tina Tenant",
        "phone": "+1 555 0199",
        "description": "Pipe burst under the sink",
    }
    return form | overrides


@pytest.fixture
def servers():
    started: list[ServerProcess] = []

    def start(cwd: Path, *args: str, env=None, port: int | None = None, serve_args=()):
        server = ServerProcess(cwd, list(args), port or free_port(), env, serve_args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

"""Many processes of one installation on one PostgreSQL, with a real SMTP server: every
message once, every silence timer once, every vendor action once, a repeat joins the
open request whichever process gets it. Outcomes are counted at the SMTP server and in
the database."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg2
import pytest

from outofoffice import keys, migrations
from tests.conftest import DATABASE, base_sections, write_config
from tests.servers import Browser, routing_form, run_cli
from tests.smtp_sink import SMTPSink, free_port

pytestmark = pytest.mark.postgresql_only

VERA, WALT, OWNER = "vera@plumb.example", "walt@water.example", "ann@alpha.example"
FIRM = {
    "format": "outofoffice-export",
    "version": 1,
    "exported_at": "2026-11-27T10:00:00Z",
    "account": {
        "email": OWNER,
        "name": "Ann Alpha",
        "business_name": "Alpha Properties",
        "slug": "alpha",
        "industry": "property_management",
        "timezone": "Europe/London",
        "contact_phone": "+1 555 0100",
        "notify": "every",
        "escalate_after_minutes": 15,
        "business_hours": {},
    },
    "vendors": [
        {"key": "v1", "name": "Vera Plumb", "company": "", "email": VERA, "phone": "", "notes": ""},
        {"key": "v2", "name": "Walt Water", "company": "", "email": WALT, "phone": "", "notes": ""},
    ],
    "subjects": [{"key": "s1", "name": "Elm Street", "address": "12 Elm St", "reference": ""}],
    "categories": [
        {"key": "c1", "name": "Plumbing", "description": "Shut the valve.", "emergency": False}
    ],
    "routes": [{"subject": None, "category": "c1", "when": "always", "vendors": ["v1", "v2"]}],
    "dispatches": [],
}
ACCEPT = re.compile(r"Accept: +http://[^/\s]+(/v/\S+)")
REFERENCE = re.compile(r"\(([A-Z0-9]{3}-[A-Z0-9]+)\)$")


class Installation:
    """Processes of one installation: one database and one secret key, and a data dir
    (a machine) each, all answering at one public address."""

    def __init__(self, tmp_path: Path, sink: SMTPSink, servers, **overrides):
        self.tmp, self.sink, self.servers = tmp_path, sink, servers
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.overrides = overrides
        self.workers: list[subprocess.Popen] = []

    def config(self, machine: str, key: str = "secret.key") -> Path:
        folder = self.tmp / machine
        folder.mkdir(exist_ok=True)
        settings = {
            "server": {"base_url": self.base_url},
            "security": {"secret_key_file": str(self.tmp / key)},
            "mail": {"backend": "smtp", "from": "Alpha Desk <desk@alpha.example>"},
            "mail__smtp": {
                "host": "127.0.0.1",
                "port": self.sink.port,
                "security": "none",
                "timeout": 3,
            },
            "abuse": {
                "dispatches_per_ip_per_hour": 10_000,
                "dispatches_per_account_per_hour": 10_000,
            },
            "scheduler": {"lease_seconds": 10},
        }
        for section, values in self.overrides.items():
            settings[section] = settings.get(section, {}) | values
        sections = base_sections(folder, **settings)
        return write_config(folder / "config.toml", sections)

    def set_up(self) -> None:
        """The admin's first steps, on the first machine: migrate, import the firm."""
        cfg = self.config("m0")
        firm = self.tmp / "firm.json"
        firm.write_text(json.dumps(FIRM))
        run_cli(cfg, "migrate")
        run_cli(cfg, "import", str(firm))

    def serve(self, machine: str, scheduler: bool = True):
        cfg = self.config(machine)
        return self.servers(
            cfg.parent, "--config", str(cfg), serve_args=[] if scheduler else ["--no-scheduler"]
        )

    def worker(self, machine: str) -> subprocess.Popen:
        cfg = self.config(machine)
        log = open(cfg.parent / "worker.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "outofoffice", "--config", str(cfg), "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            proc.wait(timeout=20)
        self.workers.clear()


@pytest.fixture
def installation(tmp_path, servers):
    with SMTPSink() as sink:
        inst = Installation(tmp_path, sink, servers)
        inst.set_up()
        yield inst
        inst.stop_workers()


def query(sql: str, *params) -> list[tuple]:
    with psycopg2.connect(DATABASE["url"]) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    conn.close()
    return rows


def at_once(calls) -> list:
    """Run the calls in threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def to(sink: SMTPSink, address: str) -> list:
    with sink.lock:
        return [m for m in sink.messages if m["To"] == address]


def wait_until(check, timeout: float = 30.0, settle: float = 1.5):
    """Wait for check() to hold, then a moment more, so that a second copy of anything
    has time to arrive and be counted."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    time.sleep(settle)


def post(server, path: str, data: dict):
    """A call for at_once: one POST by a browser of its own; the status it got."""
    return lambda: Browser(server.url).request(path, data)[0]


def submit_many(servers_, phones: list[str]) -> list[int]:
    """One caller per phone, all at once, spread over the servers."""
    page = Browser(servers_[0].url).request("/r/alpha")[2]
    return at_once(
        [
            post(servers_[i % len(servers_)], "/r/alpha", routing_form(page, p))
            for i, p in enumerate(phones)
        ]
    )


def test_repeats_sent_at_once_to_two_processes_join_one_dispatch(installation):
    a = installation.serve("m1")
    b = installation.serve("m2", scheduler=False)
    page = Browser(a.url).request("/r/alpha")[2]
    calls = []
    for caller in range(20):
        for attempt in range(4):
            server = (a, b)[attempt % 2]
            calls.append(post(server, "/r/alpha", routing_form(page, f"+1 555 01{caller:02d}")))
    assert at_once(calls) == [200] * 80
    assert query("SELECT count(*) FROM dispatch") == [(20,)]
    assert query("SELECT count(*) FROM dispatch_event WHERE kind = 'repeat'") == [(60,)]
    sink = installation.sink
    wait_until(lambda: len(to(sink, VERA)) >= 20)
    assert len(to(sink, VERA)) == 20
    assert len({REFERENCE.search(m["Subject"]).group(1) for m in to(sink, VERA)}) == 20


def test_the_hourly_limit_holds_across_processes(tmp_path, servers):
    with SMTPSink() as sink:
        inst = Installation(tmp_path, sink, servers)
        inst.set_up()
        inst.overrides = {"abuse": {"dispatches_per_ip_per_hour": 5}}
        a, b = inst.serve("m1"), inst.serve("m2", scheduler=False)
        answers = submit_many([a, b], [f"+1 555 02{n:02d}" for n in range(12)])
    assert Counter(answers) == {200: 5, 429: 7}
    assert query("SELECT count(*) FROM dispatch") == [(5,)]


def test_an_edit_in_the_database_shows_on_every_process_s_routing_page(installation):
    """Each process keeps its routing pages rendered; a change written by anyone (here
    straight into the database, as another machine would) shows on the next request."""
    servers_ = [installation.serve("m1"), installation.serve("m2", scheduler=False)]

    def pages() -> list[str]:
        return [Browser(s.url).request("/r/alpha")[2] for s in servers_]

    assert all("Elm Street" in p and "Plumbing" in p for p in pages() + pages())
    query(
        "INSERT INTO subject (account_id, name, address, reference, created_at) "
        "SELECT id, 'Oak Court', '8 Oak Ct', '', now() FROM account RETURNING id"
    )
    query("UPDATE category SET name = 'Burst pipes' RETURNING id")
    assert all("Oak Court" in p and "Burst pipes" in p for p in pages())
    assert not any("Plumbing" in p for p in pages())
    query("DELETE FROM subject WHERE name = 'Oak Court' RETURNING id")
    assert not any("Oak Court" in p for p in pages())


def test_an_accept_posted_twice_at_once_counts_once(installation):
    a = installation.serve("m1")
    b = installation.serve("m2", scheduler=False)
    sink = installation.sink
    assert submit_many([a], [f"+1 555 03{n:02d}" for n in range(10)]) == [200] * 10
    wait_until(lambda: len(to(sink, VERA)) >= 10, settle=0)
    links = [ACCEPT.search(m.get_body(("plain",)).get_content()).group(1) for m in to(sink, VERA)]
    for link in links:
        answers = at_once([post(a, link, {}), post(b, link, {})])
        assert answers == [200, 200]  # the second is told it is accepted already
    rows = query(
        "SELECT dispatch_id, count(*) FROM dispatch_event WHERE kind = 'accepted' "
        "GROUP BY dispatch_id"
    )
    assert len(rows) == 10 and {n for _, n in rows} == {1}
    assert query("SELECT DISTINCT status FROM dispatch") == [("accepted",)]

    def accepted_notices():
        return [m for m in to(sink, OWNER) if m["Subject"].startswith("Accepted by")]

    wait_until(lambda: len(accepted_notices()) >= 10)
    assert len(accepted_notices()) == 10


def test_two_schedulers_send_every_email_once_and_fire_every_timer_once(installation):
    web = installation.serve("web", scheduler=False)
    installation.worker("w1")
    installation.worker("w2")
    sink = installation.sink
    phones = [f"+1 555 04{n:02d}" for n in range(30)]
    assert submit_many([web], phones) == [200] * 30
    # 30 vendor emails and 30 owner notices
    wait_until(lambda: len(sink.messages) >= 60)
    ids = Counter(m["Message-ID"] for m in sink.messages)
    assert len(sink.messages) == 60 and set(ids.values()) == {1}
    assert query("SELECT count(*) FROM outbox WHERE status = 'sent'") == [(60,)]

    health = json.loads(Browser(web.url).request("/healthz")[2])
    assert health["status"] == "ok"
    assert health["scheduler"] == "running in another process"
    stats = run_cli(installation.config("web"), "stats")
    assert stats.count(" scheduler ") == 2 and stats.count(" web ") == 1

    # every vendor stayed silent: both schedulers come back at the same moment
    installation.stop_workers()
    query_count = query(
        "UPDATE dispatch SET escalate_at = (now() AT TIME ZONE 'utc') - interval '1 minute' "
        "WHERE status = 'sent' RETURNING id"
    )
    assert len(query_count) == 30
    installation.worker("w1")
    installation.worker("w2")
    wait_until(lambda: len(to(sink, WALT)) >= 30)
    assert len(to(sink, WALT)) == 30
    rows = query(
        "SELECT dispatch_id, count(*) FROM dispatch_event WHERE kind = 'escalated' "
        "GROUP BY dispatch_id"
    )
    assert len(rows) == 30 and {n for _, n in rows} == {1}
    assert set(Counter(m["Message-ID"] for m in sink.messages).values()) == {1}


def test_a_killed_deliverer_loses_nothing_its_claims_return_after_the_lease(installation):
    web = installation.serve("web", scheduler=False)
    sink = installation.sink
    sink.delay = 0.3  # a slow relay, so the worker dies holding claimed rows
    first = installation.worker("w1")
    phones = [f"+1 555 05{n:02d}" for n in range(20)]
    assert submit_many([web], phones) == [200] * 20
    wait_until(lambda: len(sink.messages) >= 3, settle=0)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    claimed = query(
        "SELECT count(*) FROM outbox WHERE status = 'queued' AND claimed_by IS NOT NULL"
    )
    assert claimed[0][0] > 0  # it died holding some
    installation.worker("w2")
    references = {r for (r,) in query("SELECT reference FROM dispatch")}

    def vendor_references():
        return {REFERENCE.search(m["Subject"]).group(1) for m in to(sink, VERA)}

    def all_sent():
        return query("SELECT DISTINCT status FROM outbox") == [("sent",)]

    # every message: the owner's notices too, and a claim left by the dead process
    wait_until(lambda: vendor_references() == references and all_sent(), timeout=60)
    # a copy the dead process had handed over but not recorded may come again, with
    # the same Message-ID, so the mail system can tell
    by_reference: dict[str, set] = {}
    for m in to(sink, VERA):
        by_reference.setdefault(REFERENCE.search(m["Subject"]).group(1), set()).add(m["Message-ID"])
    assert all(len(ids) == 1 for ids in by_reference.values())


def test_two_processes_starting_together_on_an_empty_database_both_serve(tmp_path, servers):
    with SMTPSink() as sink:
        inst = Installation(tmp_path, sink, servers)
        started = at_once([lambda m=m: inst.serve(m) for m in ("m1", "m2")])
    for server in started:
        health = json.loads(Browser(server.url).request("/healthz")[2])
        assert health["status"] == "ok" and health["database"] == "ok"
    assert query("SELECT version FROM schema_version") == [(migrations.LATEST,)]
    assert (tmp_path / "secret.key").exists()
    assert all("Traceback" not in s.output() for s in started)


def test_a_machine_with_another_secret_key_refuses_to_start(installation):
    """A second machine that made a key of its own (the first one's was never copied
    to it) would write what no other machine can read."""
    other = installation.config("m9", key="other.key")
    keys.create_key_file(installation.tmp / "other.key")
    result = subprocess.run(
        [sys.executable, "-m", "outofoffice", "--config", str(other), "serve"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "not the secret key the database was written with" in result.stderr


def test_requests_during_a_database_restart_get_a_503_then_work_again(
    installation, postgres_cluster
):
    server = installation.serve("m1")
    browser = Browser(server.url)
    assert browser.request("/r/alpha")[0] == 200
    postgres_cluster.stop_server()
    try:
        status, _, page = browser.request("/r/alpha")
        assert status == 503 and "phone the firm" in page
        health = browser.request("/healthz")
        assert health[0] == 503 and json.loads(health[2])["database"].startswith("error")
    finally:
        postgres_cluster.start_server()
    wait_until(lambda: browser.request("/r/alpha")[0] == 200, timeout=20, settle=0)
    page = browser.request("/r/alpha")[2]
    assert browser.request("/r/alpha", routing_form(page, "+1 555 0601"))[0] == 200
    assert query("SELECT count(*) FROM dispatch") == [(1,)]

"""A stream of callers against a real `outofoffice serve` and a real SMTP server, and the
counts a fault test asserts: what callers were told, what the database holds, what the
vendor received.

The firm is test_scale_out's: Alpha Properties imported from a small export, one route
(Plumbing: Vera, then Walt), so every accepted request owes Vera one email whose
subject ends with its reference. Use it like this::

    with Relay() as relay:
        inst = Installation(tmp_path, relay, servers)  # tests/integration/test_scale_out
        inst.set_up()
        server = inst.serve(MACHINE)
        stream = Stream(server.url, total=200, interval=0.05).start()
        stream.wait_for(100)  # ... break something, mend it ...
        stream.join()
        counts = settle(stream, server, Database(inst.config(MACHINE)), relay)
        print(counts)
        assert counts.lost() == set()

One caller per attempt, each with a phone of their own (no attempt joins another's
request). An attempt's outcome is what the caller saw: `accepted` (303 to a status
link), `refused` (503, the honest "try again / phone the firm"), `unreachable` (no
answer: refused connection, reset, timeout) or `other` (anything else; a bug).
"""

from __future__ import annotations

import http.client
import json
import re
import sqlite3
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from outofoffice import config as config_module
from tests.integration.test_scale_out import REFERENCE, VERA
from tests.servers import Browser, ServerProcess, routing_form
from tests.smtp_sink import SMTPSink

# Installation gives each machine a data dir; on SQLite the firm lives in the first
# one's database, so a single-box test serves from there.
MACHINE = "m0"
STATUS_REFERENCE = re.compile(r"Request ([A-Z0-9]{3}-[A-Z0-9]+)")
NO_ANSWER = (OSError, http.client.HTTPException)  # refused, reset, timed out, cut short


@dataclass(frozen=True)
class Outcome:
    """One caller's attempt: what they were told, and when (time.monotonic())."""

    n: int
    phone: str
    kind: str  # accepted | refused | unreachable | other
    status: int | None
    location: str
    detail: str
    at: float


class Stream:
    """Callers submitting the routing page one after another from a thread, one every
    ``interval`` seconds (at most), ``total`` attempts in all."""

    def __init__(self, url: str, total: int, interval: float = 0.0, slug: str = "alpha"):
        self.url, self.total, self.interval, self.path = url, total, interval, f"/r/{slug}"
        self.outcomes: list[Outcome] = []
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = threading.Event()
        self._page = ""

    def start(self) -> Stream:
        """Open the routing page once (its form token lasts hours and survives a
        restart), then submit from the thread."""
        status, _, self._page = Browser(self.url).request(self.path)
        assert status == 200, f"routing page answered {status}"
        self._thread.start()
        return self

    def _run(self) -> None:
        for n in range(self.total):
            if self._stopped.is_set():
                return
            began = time.monotonic()
            outcome = self.submit(n)
            with self._lock:
                self.outcomes.append(outcome)
                self._lock.notify_all()
            self._stopped.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def submit(self, n: int) -> Outcome:
        """One caller's POST, redirects not followed: the 303 is the acceptance, and a
        server killed before the caller follows it has still accepted."""
        phone = f"+1 555 {n:04d}"
        body = urllib.parse.urlencode(routing_form(self._page, phone))
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            conn.request("POST", self.path, body, headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        except NO_ANSWER as exc:
            return Outcome(n, phone, "unreachable", None, "", type(exc).__name__, time.monotonic())
        finally:
            conn.close()
        location = response.getheader("Location", "")
        status = response.status
        if status == 303 and "/s/" in location:
            kind = "accepted"
        elif status == 503:
            kind = "refused"
        else:
            kind = "other"
        detail = "" if kind == "accepted" else text
        return Outcome(n, phone, kind, status, location, detail, time.monotonic())

    def wait_for(self, count: int, timeout: float = 120.0) -> None:
        """Until ``count`` attempts have an outcome."""
        with self._lock:
            done = self._lock.wait_for(lambda: len(self.outcomes) >= count, timeout)
        assert done, f"only {len(self.outcomes)} of {count} attempts answered in {timeout}s"

    def stop(self) -> None:
        """No more callers after the one under way (``join`` waits for it)."""
        self._stopped.set()

    def join(self, timeout: float = 300.0) -> list[Outcome]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not finish"
        return list(self.outcomes)

    def of_kind(self, kind: str) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.kind == kind]

    def references(self, url: str) -> dict[str, Outcome]:
        """The reference of every accepted attempt, read from its status page as the
        caller would (the status link is all a 303 carries)."""
        found = {}
        browser = Browser(url)
        for outcome in self.of_kind("accepted"):
            status, _, page = browser.request(urllib.parse.urlsplit(outcome.location).path)
            match = STATUS_REFERENCE.search(page)
            assert status == 200 and match, f"status link of caller {outcome.n}: {status}"
            found[match.group(1)] = outcome
        return found


class _Inbox(list):
    """The relay's messages; ``arrivals[i]`` is when message i came (time.monotonic())."""

    def __init__(self):
        super().__init__()
        self.arrivals: list[float] = []

    def append(self, message) -> None:
        self.arrivals.append(time.monotonic())
        super().append(message)


class Relay:
    """The SMTP relay: a real SMTP server (tests/smtp_sink.py) that can go down and come
    back on the same port, keeping every message it received in ``messages`` and when
    each came in ``messages.arrivals``."""

    def __init__(self, delay: float = 0.0):
        self._sink = SMTPSink()
        self.port, self.lock = self._sink.port, self._sink.lock
        self.messages = self._sink.messages = _Inbox()
        self.delay = delay  # seconds each message takes to be accepted: a slow relay
        self.running = False

    def up(self) -> None:
        if not self.running:
            self._sink = SMTPSink(port=self.port)
            self._sink.messages, self._sink.lock = self.messages, self.lock
            self._sink.delay = self.delay
            self._sink.controller.start()
            self.running = True

    def down(self) -> None:
        """Stop listening: a connection to the port is refused, as with a dead relay."""
        if self.running:
            self._sink.controller.stop()
            self.running = False

    def __enter__(self) -> Relay:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


class Database:
    """The installation's database read directly, as an admin with sqlite3 or psql
    would (never through the product's own code, which is what is being tested)."""

    def __init__(self, config_path: Path):
        self.url = config_module.load(config_path).database_url

    def rows(self, sql: str) -> list[tuple]:
        if self.url.startswith("sqlite:///"):
            path = self.url.removeprefix("sqlite:///")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import psycopg2

        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()
        finally:
            conn.close()

    def references(self) -> set[str]:
        return {r for (r,) in self.rows("SELECT reference FROM dispatch")}

    def queued(self) -> int:
        """Outbox rows not yet recorded as sent (or dead)."""
        return self.rows("SELECT count(*) FROM outbox WHERE status = 'queued'")[0][0]

    def events(self, kind: str) -> Counter:
        """How many events of this kind each dispatch has, by reference."""
        return Counter(
            dict(
                self.rows(
                    "SELECT d.reference, count(*) FROM dispatch_event e"  # noqa: S608
                    " JOIN dispatch d ON d.id = e.dispatch_id"
                    f" WHERE e.kind = '{kind}' GROUP BY d.reference"
                )
            )
        )


def vendor_emails(relay, vendor: str = VERA) -> dict[str, list[str]]:
    """The Message-IDs the vendor received, per reference (a repeat is a second entry)."""
    return {ref: [m["Message-ID"] for m, _ in got] for ref, got in _by_reference(relay, vendor)}


def copies(relay) -> int:
    """Emails of any kind (vendors', owners') that arrived more than once: the extra
    copies, counted by Message-ID."""
    with relay.lock:
        ids = Counter(m["Message-ID"] for m in relay.messages)
    return sum(n - 1 for n in ids.values())


def first_arrivals(relay: Relay, vendor: str = VERA) -> dict[str, float]:
    """When the vendor's first email for each reference came (time.monotonic())."""
    return {ref: min(at for _, at in got) for ref, got in _by_reference(relay, vendor)}


def _by_reference(relay, vendor: str):
    found: dict[str, list] = {}
    with relay.lock:
        arrivals = getattr(relay.messages, "arrivals", [0.0] * len(relay.messages))
        pairs = list(zip(relay.messages, arrivals, strict=True))
    for message, at in pairs:
        if message["To"] != vendor:
            continue
        match = REFERENCE.search(message["Subject"])
        assert match, f"a vendor email without a reference: {message['Subject']!r}"
        found.setdefault(match.group(1), []).append((message, at))
    return found.items()


@dataclass
class Counts:
    """What a fault test prints and asserts. ``accepted`` holds references callers were
    given; ``stored`` what the database holds; ``delivered`` the vendor's emails."""

    outcomes: Counter
    accepted: set[str]
    stored: set[str]
    delivered: dict[str, list[str]]
    extra: dict = field(default_factory=dict)

    def lost(self) -> set[str]:
        """Accepted (or stored) but not stored, or stored without its vendor email."""
        return (self.accepted - self.stored) | (self.stored - set(self.delivered))

    def repeats(self) -> int:
        """Vendor emails beyond the first per reference (a crash between send and record)."""
        return sum(len(ids) - 1 for ids in self.delivered.values())

    def message_ids_per_reference(self) -> int:
        """The most distinct Message-IDs one reference arrived with: 1 when every repeat
        is a copy the mail system can recognise."""
        return max((len(set(ids)) for ids in self.delivered.values()), default=0)

    def __str__(self) -> str:
        parts = {
            "attempts": sum(self.outcomes.values()),
            **{k: self.outcomes.get(k, 0) for k in ("accepted", "refused", "unreachable", "other")},
            "stored": len(self.stored),
            "delivered": len(self.delivered),
            "repeats": self.repeats(),
            "lost": len(self.lost()),
            **self.extra,
        }
        return "counts: " + json.dumps(parts)


def settle(
    stream: Stream,
    server: ServerProcess,
    database: Database,
    relay,
    timeout: float = 60.0,
    linger: float = 1.5,
) -> Counts:
    """Once the stream is over: wait until every stored request's vendor email arrived
    and the outbox holds nothing unrecorded (an email sent but not recorded goes again
    after its lease: a repeat to count), at most ``timeout``; then ``linger`` more for
    any late copy, and count."""
    accepted = set(stream.references(server.url))
    stored = database.references()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored <= set(vendor_emails(relay)) and database.queued() == 0:
            break
        time.sleep(0.2)
    time.sleep(linger)
    return Counts(Counter(o.kind for o in stream.outcomes), accepted, stored, vendor_emails(relay))


def kill(server: ServerProcess) -> None:
    """kill -9: no shutdown, no flush, the way a power cut or the OOM killer ends it."""
    server.proc.kill()
    server.proc.wait(timeout=10)


def restart(servers, server: ServerProcess) -> ServerProcess:
    """The same serve again on the same port (the ``servers`` fixture stops it at the end)."""
    return servers(
        server.cwd, *server.args, env=server.env, port=server.port, serve_args=server.serve_args
    )


def healthz(url: str) -> tuple[int | None, dict]:
    """/healthz's status and report; (None, {}) when nothing answers."""
    try:
        status, _, body = Browser(url).request("/healthz")
    except NO_ANSWER:
        return None, {}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"body": body[:500]}

"""Another process holds SQLite's write lock for 25 s in the middle of a stream of
callers, against the real `outofoffice serve` and a real SMTP server: the routing page
keeps answering within a second, callers who cannot be served get the 503 page with the
firm's phone, and after the release every accepted request is stored and its vendor
email arrives once."""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter

import pytest

from outofoffice import config as config_module
from tests.faults.stream import MACHINE, Database, Relay, Stream, settle
from tests.integration.test_scale_out import Installation
from tests.servers import Browser, routing_form

pytestmark = pytest.mark.sqlite_only  # the write lock is SQLite's

HOLD_SECONDS = 25
CALLERS = 8  # as many as the server has threads: only the bound on waiting writers
# keeps threads free for the routing page
OFFICE = "Please phone Alpha Properties at"
OFFICE_LINK = 'href="tel:+15550100"'  # the firm's contact_phone, +1 555 0100
# Holds the write lock as a sqlite3 shell's BEGIN IMMEDIATE would, until told to let go.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class Callers:
    """Callers in threads of their own, each sending the routing page again a moment
    after its answer, until stopped; their outcomes go to ``stream`` (tests/faults/
    stream.py), whose submit() is one caller's POST."""

    def __init__(self, url: str, count: int, pause: float):
        self.stream = Stream(url, total=0).start()  # the page and its form token
        self.pause = pause
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self, k: int) -> None:
        n = 1000 * k  # a phone of their own for every caller
        while not self.stopping.is_set():
            self.stream.outcomes.append(self.stream.submit(n))
            n += 1
            self.stopping.wait(self.pause)

    def count(self, kind: str, since: float = 0.0) -> int:
        return sum(1 for o in list(self.stream.outcomes) if o.kind == kind and o.at >= since)

    def wait_for(self, kind: str, count: int, since: float = 0.0, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count(kind, since) < count:
            assert time.monotonic() < deadline, f"fewer than {count} {kind} in {timeout}s"
            time.sleep(0.05)

    def stop(self) -> Stream:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)
        return self.stream


class Readers:
    """Someone opening the routing page every ``every`` seconds: (began, seconds, status)."""

    def __init__(self, url: str, path: str = "/r/alpha", every: float = 0.2):
        self.url, self.path, self.every = url, path, every
        self.answers: list[tuple[float, float, int | None]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        browser = Browser(self.url)
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                status = browser.request(self.path)[0]
            except OSError:
                status = None
            self.answers.append((began, time.monotonic() - began, status))
            self.stopping.wait(self.every)

    def between(self, start: float, end: float) -> list[tuple[float, float, int | None]]:
        return [a for a in self.answers if start <= a[0] <= end]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)


def post_whole(url: str, phone: str, description: str = "Pipe burst under the sink"):
    """One caller's POST with the whole answer read: (status, headers, page)."""
    page = Browser(url).request("/r/alpha")[2]
    fields = routing_form(page, phone) | {"description": description}
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request(
            "POST",
            "/r/alpha",
            urllib.parse.urlencode(fields),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def assert_told_to_phone_with_input_kept(answer, phone: str, description: str) -> None:
    status, headers, page = answer
    assert status == 503, (status, page[:500])
    assert headers.get("Retry-After", "").isdigit()
    assert "We could not take your request just now" in page
    assert OFFICE in page and OFFICE_LINK in page
    assert f'value="{phone}"' in page and f">{description}</textarea>" in page


def same_message_twice(relay) -> list[str]:
    """Message-IDs the SMTP server received more than once, whoever they were for."""
    with relay.lock:
        ids = Counter(m["Message-ID"] for m in relay.messages)
    return [message_id for message_id, n in ids.items() if n > 1]


def database_file(config_path) -> str:
    return config_module.load(config_path).database_url.removeprefix("sqlite:///")


def test_a_write_lock_held_25_s_stalls_no_page_and_sends_no_email_twice(tmp_path, servers):
    with Relay() as relay:
        inst = Installation(tmp_path, relay, servers)
        inst.set_up()
        cfg = inst.config(MACHINE)
        server = inst.serve(MACHINE)
        callers = Callers(server.url, CALLERS, pause=0.3)
        readers = Readers(server.url)
        try:
            callers.wait_for("accepted", 10)
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, database_file(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout.readline().strip() == "held"
            held_at = time.monotonic()
            callers.wait_for("refused", 1, since=held_at)
            during = post_whole(server.url, "+1 555 9999", "Water through the ceiling")
            assert_told_to_phone_with_input_kept(during, "+1 555 9999", "Water through the ceiling")
            time.sleep(max(0.0, held_at + HOLD_SECONDS - time.monotonic()))  # the fault lasts
            releasing_at = time.monotonic()
            holder.communicate("\n", timeout=10)
            released_at = time.monotonic()
            callers.wait_for("accepted", 10, since=released_at)
        finally:
            readers.stop()
            stream = callers.stop()
        counts = settle(stream, server, Database(cfg), relay)
        copies = same_message_twice(relay)
    reads = readers.between(held_at, released_at)
    slowest = max(seconds for _, seconds, _ in reads)
    outcomes = stream.outcomes
    refused = [o for o in outcomes if o.kind == "refused"]
    counts.extra |= {
        "duplicates": counts.repeats(),
        "any_message_twice": len(copies),
        "reads_during_hold": len(reads),
        "slowest_read_s": round(slowest, 3),
    }
    print(f"write lock held {HOLD_SECONDS} s: {counts}")
    assert counts.outcomes["other"] == 0, stream.of_kind("other")[:3]
    assert counts.outcomes["unreachable"] == 0, stream.of_kind("unreachable")[:3]
    # the routing page answered all along, each time within a second
    assert len(reads) >= HOLD_SECONDS * 2 and {status for _, _, status in reads} == {200}
    assert slowest < 1.0, [(round(b - held_at, 1), round(s, 2)) for b, s, _ in reads if s >= 1]
    # while the lock was held nobody was accepted, and who was refused was told to phone
    outside = [round(o.at - held_at, 3) for o in refused if not held_at <= o.at <= released_at + 1]
    assert refused and not outside, (outside, released_at - held_at)
    assert not [o for o in outcomes if o.kind == "accepted" and held_at + 1 < o.at < releasing_at]
    untold = [o for o in refused if OFFICE not in o.detail]
    assert not untold, untold[0].detail
    # after the release: everything accepted is stored, and its vendor got it once
    assert counts.accepted and counts.accepted <= counts.stored, counts.accepted - counts.stored
    assert set(counts.delivered) == counts.stored, counts.lost()
    assert counts.repeats() == 0 and not copies, copies
    log = server.output()
    assert "write lock is held by another process" in log
    assert "wait for it already" in log  # the bound on waiting writers kept threads free

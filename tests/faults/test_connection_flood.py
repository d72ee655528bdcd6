"""300 slow connections from one address, and another caller's routing page still
answers within a second.

The flood comes from 127.0.0.1: half of it idle (connects, sends nothing), half slowloris
(a request line one byte a second, never finished). The server holds 100 connections in
all, so without a cap per address the flood takes every one and the caller at
127.0.0.2 (all of 127/8 is loopback on Linux) waits in the kernel's queue.
"""

from __future__ import annotations

import http.client
import itertools
import selectors
import socket
import time

import pytest

from tests.conftest import base_sections, write_config
from tests.servers import CREATE_ALPHA, run_cli
from tests.smtp_sink import free_port

pytestmark = pytest.mark.sqlite_only  # the database plays no part in a connection flood

FLOOD = 300
CAP = 20  # [server] connections_per_address
CHANNEL_TIMEOUT = 4
CLEANUP_INTERVAL = 1
SLOW_REQUEST = b"GET /r/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200


class Flood:
    """Connections from 127.0.0.1 that hold on as long as the server lets them."""

    def __init__(self, port: int):
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.opened = 0
        self.closed: list[tuple[str, float]] = []  # (kind, seconds it stayed open)
        self.answered = 0  # connections the server sent anything to
        self.next_byte_at = time.monotonic()

    def open(self, total: int) -> None:
        kinds = itertools.cycle(["idle", "slowloris"])
        for _, kind in zip(range(total), kinds, strict=False):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            sock.setblocking(False)
            self.opened += 1
            self.selector.register(
                sock, selectors.EVENT_READ, {"kind": kind, "at": time.monotonic(), "sent": 0}
            )
            if kind == "slowloris":
                self._send_next_byte(sock)

    def still_open(self) -> int:
        return len(self.selector.get_map())

    def pump(self, seconds: float = 0.0) -> None:
        """Notice what the server closed; once a second, give each slowloris one byte."""
        for key, _ in self.selector.select(timeout=seconds):
            try:
                data = key.fileobj.recv(4096)
            except OSError:  # reset: closed with our bytes unread
                data = b""
            if data:
                self.answered += 1
            self._forget(key.fileobj)
        if time.monotonic() >= self.next_byte_at:
            self.next_byte_at = time.monotonic() + 1
            for key in list(self.selector.get_map().values()):
                if key.data["kind"] == "slowloris":
                    self._send_next_byte(key.fileobj)

    def pump_until(self, done, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            self.pump(0.05)

    def _send_next_byte(self, sock: socket.socket) -> None:
        state = self.selector.get_key(sock).data
        try:
            sock.send(SLOW_REQUEST[state["sent"] : state["sent"] + 1])
            state["sent"] += 1
        except OSError:  # the server closed it
            self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        state = self.selector.get_key(sock).data
        self.selector.unregister(sock)
        sock.close()
        self.closed.append((state["kind"], time.monotonic() - state["at"]))

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


def routing_page_from_elsewhere(port: int) -> tuple[int | None, float]:
    """GET /r/alpha as a caller at 127.0.0.2: the status (None: no answer in 1 s), and
    how long it took."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=1, source_address=("127.0.0.2", 0)
    )
    try:
        connection.request("GET", "/r/alpha")
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError:
        return None, time.monotonic() - started
    finally:
        connection.close()


def test_a_flood_of_slow_connections_from_one_address_leaves_routing_pages_answering(
    tmp_path, servers
):
    port = free_port()
    sections = base_sections(
        tmp_path,
        server={
            "base_url": f"http://127.0.0.1:{port}",
            "connection_limit": 100,
            "connections_per_address": CAP,
            "channel_timeout": CHANNEL_TIMEOUT,
            "cleanup_interval": CLEANUP_INTERVAL,
        },
    )
    cfg = write_config(tmp_path / "config.toml", sections)
    run_cli(cfg, *CREATE_ALPHA)
    server = servers(tmp_path, "--config", str(cfg), port=port)
    assert routing_page_from_elsewhere(port)[0] == 200

    flood = Flood(port)
    try:
        flood.open(FLOOD)
        flood.pump_until(lambda: flood.still_open() <= CAP, seconds=5)
        refused = len(flood.closed)
        held = flood.still_open()

        probes = []
        for _ in range(6):  # over two seconds, well before the held ones may time out
            probes.append((*routing_page_from_elsewhere(port), flood.still_open()))
            flood.pump(0.4)

        flood.pump_until(lambda: flood.still_open() == 0, seconds=CHANNEL_TIMEOUT + 4)
        timed_out = flood.closed[refused:]
        left_open = flood.still_open()
        print(
            f"\nflood: opened {flood.opened}, refused by the cap {refused}, held {held}, "
            f"timed out {len(timed_out)}, still open {left_open}, "
            f"answered {flood.answered}"
        )
        print("routing page from 127.0.0.2 (status, seconds, flood connections open):")
        for probe in probes:
            print(f"  {probe[0]} {probe[1]:.3f} {probe[2]}")
    finally:
        flood.close()

    assert flood.opened == FLOOD
    assert held == CAP and refused == FLOOD - CAP
    for status, seconds, flood_open in probes:
        assert status == 200 and seconds < 1, probes
        assert flood_open == CAP, probes  # the flood held while the page answered
    # idle ones and slowloris ones alike close after channel_timeout, not before: a
    # slowloris sends a byte a second, but its request never arrives whole
    assert left_open == 0
    assert sorted(kind for kind, _ in timed_out) == ["idle"] * (CAP // 2) + ["slowloris"] * (
        CAP // 2
    )
    assert all(seconds >= CHANNEL_TIMEOUT for _, seconds in timed_out), timed_out
    assert flood.answered == 0
    # one line for the whole flood, naming the address and nothing else of it
    refusals = [line for line in server.output().splitlines() if "127.0.0.1" in line]
    refusals = [line for line in refusals if "refus" in line]
    assert len(refusals) == 1 and "refusing connections from 127.0.0.1:" in refusals[0], refusals

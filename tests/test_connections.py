"""The web server's limits per client address, in waitress's own accept loop on a real
socket; the refusal log on a clock the test moves; the open files budget in a process
of its own (limits are the process's)."""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import subprocess
import sys
import time

import pytest
from waitress import wasyncore

from outofoffice.connections import (
    NAMED_PER_MINUTE,
    AddressCounts,
    QueueDepthLog,
    RefusalLog,
    client_key,
    create_server,
    epoll_once,
)

pytestmark = pytest.mark.no_database


def test_an_address_is_counted_as_itself_and_an_ipv6_address_by_its_64():
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert (
        client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    )
    assert client_key("2001:db8:1:3::5") != client_key("2001:db8:1:2::5")
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key("localhost") == "localhost"  # a unix socket's peer


def test_an_address_is_admitted_up_to_its_cap_and_again_once_one_closes():
    counts = AddressCounts(2, exempt=["198.51.100.1"])
    client = counts.keys("203.0.113.9")
    for _ in range(2):
        assert counts.admits(client)
        counts.opened(client)
    assert not counts.admits(client)
    assert counts.admits(counts.keys("203.0.113.10"))  # another address has its own
    counts.closed(client)
    assert counts.admits(client)
    counts.closed(client)
    assert counts.open == {}  # nothing kept for an address with nothing open
    proxy = counts.keys("198.51.100.1")
    for _ in range(5):
        counts.opened(proxy)
    assert counts.admits(proxy)  # the trusted proxy carries every client


def test_an_ipv6_site_cannot_spread_over_its_64s_beyond_a_few_caps():
    counts = AddressCounts(2)
    admitted = 0
    for n in range(100):  # one connection from each of 100 /64s of one /48
        keys = counts.keys(f"2001:db8:1:{n:x}::1")
        if counts.admits(keys):
            counts.opened(keys)
            admitted += 1
    assert admitted == 2 * 4  # the cap times NETWORK_SHARE
    assert counts.admits(counts.keys("2001:db8:2::1"))  # another site has its own


def test_only_the_trusted_proxys_own_address_is_exempt_not_its_neighbours():
    counts = AddressCounts(1, exempt=["2001:db8::1"])
    assert counts.keys("2001:db8::1") == ()
    neighbour = counts.keys("2001:db8::2")
    counts.opened(neighbour)
    assert not counts.admits(neighbour)


def test_a_flood_from_many_addresses_names_a_few_and_counts_the_rest(caplog):
    clock = Clock()
    refusals = RefusalLog(cap=20, clock=clock)
    caplog.set_level(logging.WARNING, logger="outofoffice.connections")
    for n in range(500):
        refusals.refused(f"203.0.113.{n % 250}" if n < 250 else f"2001:db8:{n}::/64")
    assert len(caplog.records) == NAMED_PER_MINUTE
    clock.now += 61
    refusals.tick()
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith(
            f"refused {500 - NAMED_PER_MINUTE} more connections from addresses not named here"
        )
    )


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_logged_once_a_minute_per_address_with_their_count(caplog):
    clock = Clock()
    refusals = RefusalLog(cap=20, clock=clock)
    caplog.set_level(logging.WARNING, logger="outofoffice.connections")
    for _ in range(50):
        refusals.refused("203.0.113.9")
        clock.now += 0.5
    refusals.refused("198.51.100.7")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("refusing connections from 203.0.113.9: it holds 20 open")
    assert lines[1].startswith("refusing connections from 198.51.100.7:")
    assert len(lines) == 2

    clock.now += 60
    refusals.tick()
    assert (
        caplog.records[2]
        .getMessage()
        .startswith("refused 49 more connections from 203.0.113.9 in the last 85 s")
    )
    assert len(caplog.records) == 3  # 198.51.100.7 had no more: nothing to say

    clock.now += 61
    refusals.tick()  # a quiet minute: both forgotten
    assert refusals.windows == {}
    refusals.refused("203.0.113.9")
    assert caplog.records[-1].getMessage().startswith("refusing connections from 203.0.113.9:")


def test_requests_waiting_for_a_thread_are_said_once_a_minute_with_the_deepest_queue(caplog):
    clock = Clock()
    queue = QueueDepthLog(clock=clock)
    caplog.set_level(logging.WARNING, logger="outofoffice.connections")
    for depth in [1, 2, 3, 9, 4] * 20:  # a burst: waitress reports every waiting request
        queue.warning("Task queue depth is %d", depth)
        clock.now += 0.7
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("requests waited for a free thread (up to 1 at once)")
    assert lines[1].startswith("requests waited for a free thread (up to 9 at once in the last 60")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def limited_server():
    made = []

    def make(per_address: int, exempt=()):
        server = create_server(
            hello,
            per_address,
            exempt,
            host="127.0.0.1",
            port=0,
            threads=1,
            asyncore_use_poll=True,
            clear_untrusted_proxy_headers=True,
        )
        made.append(server)
        return server

    yield make
    for server in made:
        wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown()


def serve_until(server, done, seconds: float = 5) -> None:
    """Run waitress's loop until done() holds."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the server never got there"
        epoll_once(0.01, server._map)  # the loop's turn, as `serve` runs it


def connect(server, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", int(server.effective_port)), timeout=2, source_address=(source, 0)
    )
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_connections_beyond_an_address_cap_are_closed_at_once_and_others_still_served(
    limited_server,
):
    server = limited_server(per_address=3)
    held = [connect(server) for _ in range(3)]
    serve_until(server, lambda: server.addresses.open["127.0.0.1"] == 3)
    extra = [connect(server) for _ in range(2)]
    serve_until(server, lambda: all(closed_by_server(s) for s in extra))
    assert not any(closed_by_server(s) for s in held)

    other = connect(server, source="127.0.0.2")
    other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    other.setblocking(False)

    def answered() -> bool:
        nonlocal answer
        with contextlib.suppress(BlockingIOError):  # nothing yet
            answer += other.recv(4096)
        return answer.endswith(b"hello")

    serve_until(server, answered)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    for sock in [*held, *extra, other]:
        sock.close()


def test_a_closed_connection_gives_its_place_back(limited_server):
    server = limited_server(per_address=2)
    first, second = connect(server), connect(server)
    serve_until(server, lambda: server.addresses.open["127.0.0.1"] == 2)
    first.close()  # the client goes away
    serve_until(server, lambda: server.addresses.open["127.0.0.1"] == 1)
    third = connect(server)
    serve_until(server, lambda: server.addresses.open["127.0.0.1"] == 2)
    assert not closed_by_server(third)
    for channel in list(server.active_channels.values()):
        channel.handle_close()  # the server closes them (a timeout, an error)
    assert server.addresses.open == {}
    second.close()
    third.close()


def test_the_trusted_proxy_may_hold_more_than_the_cap(limited_server):
    server = limited_server(per_address=2, exempt=["127.0.0.1"])
    held = [connect(server) for _ in range(5)]
    serve_until(server, lambda: len(server.active_channels) == 5)
    assert not any(closed_by_server(s) for s in held)
    assert server.addresses.open == {}  # not counted at all
    for sock in held:
        sock.close()


FILE_LIMITS = """
import logging, resource, sys
from outofoffice.connections import fit_open_files
logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s", level=logging.INFO)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print("fits", fit_open_files(1000, use_poll=True))
print("soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print("fits", fit_open_files(1000, use_poll=False))
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))
print("fits", fit_open_files(1000, use_poll=True))
"""


def test_serve_raises_the_open_files_limit_that_connection_limit_needs():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1128:
        pytest.skip(f"this machine's hard limit on open files is {hard}")
    result = subprocess.run(
        [sys.executable, "-c", FILE_LIMITS], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert (
        "INFO raised the open files limit from 256 to 1128 for [server] connection_limit 1000"
        in lines
    )
    assert lines[1:3] == ["fits 1000", "soft 1128"]
    assert lines[3].startswith("WARNING [server] asyncore_use_poll = false: select()")
    assert lines[4] == "fits 896"
    assert lines[5].startswith("INFO raised the open files limit from 256 to 512")
    assert lines[6].startswith(
        "WARNING only 512 files may be open (hard limit 512): serving at most 384"
    )
    assert lines[7] == "fits 384"

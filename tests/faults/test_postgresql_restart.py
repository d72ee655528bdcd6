"""PostgreSQL restarted (pg_ctl restart -m fast) in the middle of a stream of callers:
while it is away a caller is told honestly to try again or phone (a 503, never a 500),
afterwards the routing page takes requests again by itself, and every accepted request
is stored and its vendor email delivered once.

The restart is of a cluster of this test's own: the session's cluster serves every
other test meanwhile."""

import time

import pytest

from tests import postgres
from tests.faults.stream import (
    MACHINE,
    Database,
    Relay,
    Stream,
    copies,
    first_arrivals,
    settle,
)
from tests.integration.test_scale_out import Installation

pytestmark = pytest.mark.postgresql_only

BEFORE, AFTER = 100, 100  # attempts answered before the restart, and after it
INTERVAL = 0.02


@pytest.fixture
def own_cluster(postgres_cluster):
    cluster = postgres.Cluster(postgres_cluster.bin).start()
    yield cluster
    cluster.stop()


def test_a_postgresql_restart_mid_stream_gets_503s_then_recovers_and_loses_nothing(
    tmp_path, servers, own_cluster
):
    url = own_cluster.url(own_cluster.create_database())
    with Relay() as relay:
        inst = Installation(tmp_path, relay, servers, storage={"database": url})
        inst.set_up()
        server = inst.serve(MACHINE)
        stream = Stream(server.url, total=10_000, interval=INTERVAL).start()
        stream.wait_for(BEFORE)
        began = time.monotonic()
        own_cluster.restart_server("fast")
        back = time.monotonic()
        stream.wait_for(len(stream.outcomes) + AFTER)
        stream.stop()
        outcomes = stream.join()
        counts = settle(stream, server, Database(inst.config(MACHINE)), relay)
    refused = [o for o in outcomes if o.kind == "refused"]
    counts.extra |= {
        "restart_seconds": round(back - began, 2),
        "refused_during_restart": len([o for o in refused if o.at <= back + 1]),
        "refused_after": len([o for o in refused if o.at > back + 1]),
        "copies_of_any_email": copies(relay),
        # emails claimed by the pass the restart cut short wait for their lease
        "seconds_from_restart_to_last_vendor_email": round(
            max(first_arrivals(relay).values()) - back, 1
        ),
    }
    print(f"PostgreSQL restart -m fast: {counts}")

    other = stream.of_kind("other")
    assert not other, [(o.status, o.detail[:300]) for o in other[:3]]
    assert counts.outcomes["unreachable"] == 0  # serve itself stays up
    for outcome in refused:  # the firm's phone, and what the caller wrote to read it out
        assert "phone the firm" in outcome.detail and "Traceback" not in outcome.detail
        assert 'href="tel:+15550100"' in outcome.detail
        assert "Pipe burst under the sink</textarea>" in outcome.detail
    assert "Traceback" not in server.log.read_text()
    # the stream is accepted again without anyone restarting serve
    assert all(o.kind == "accepted" for o in outcomes[-AFTER // 2 :]), outcomes[-AFTER // 2 :]
    assert counts.accepted <= counts.stored
    assert set(counts.delivered) == counts.stored, f"{len(counts.lost())} not delivered"
    # an email the relay took just as the database went away cannot be recorded then:
    # the process that sent it records it once the database is back, and sends no copy
    assert counts.message_ids_per_reference() == 1
    assert copies(relay) == 0, f"{copies(relay)} emails came twice"

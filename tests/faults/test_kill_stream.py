"""kill -9 of the serve process in the middle of a stream of callers, three times: no
request a caller was told is accepted goes missing, none stays unsent, and a vendor
email repeated by a crash between its send and its record is the same message."""

import time

from outofoffice import config
from tests.faults.stream import (
    MACHINE,
    Database,
    Relay,
    Stream,
    copies,
    first_arrivals,
    kill,
    restart,
    settle,
)
from tests.integration.test_scale_out import Installation

ATTEMPTS = 240
KILLS_AT = (60, 120, 180)  # attempts answered before each kill


def test_kill_9_mid_stream_three_times_loses_no_request(tmp_path, servers, database_kind):
    # a relay that takes a moment per message, so a kill often lands between a send
    # and its record
    with Relay(delay=0.02) as relay:
        inst = Installation(tmp_path, relay, servers)
        inst.set_up()
        server = inst.serve(MACHINE)
        stream = Stream(server.url, ATTEMPTS, interval=0.03).start()
        for at in KILLS_AT:
            stream.wait_for(at)
            kill(server)
            server = restart(servers, server)
            restarted = time.monotonic()
        stream.join()
        counts = settle(stream, server, Database(inst.config(MACHINE)), relay)
    counts.extra["distinct_message_ids_per_reference"] = counts.message_ids_per_reference()
    counts.extra["copies_of_any_email"] = copies(relay)
    # what the killed process had claimed waits for its lease
    last = max(first_arrivals(relay).values()) - restarted
    counts.extra["seconds_from_last_restart_to_last_vendor_email"] = round(last, 1)
    print(f"kill -9 x{len(KILLS_AT)} on {database_kind}: {counts}")
    assert counts.outcomes["other"] == 0, stream.of_kind("other")[:3]
    assert counts.accepted, "no caller was accepted"
    assert counts.accepted <= counts.stored, counts.accepted - counts.stored
    assert set(counts.delivered) == counts.stored, counts.lost()
    assert counts.message_ids_per_reference() == 1
    # a pass sends up to [mail.smtp] connections emails at once: a kill can leave that
    # many sent but unrecorded, each sent again with the same Message-ID
    at_once = config.load(inst.config(MACHINE)).mail.smtp.connections
    assert copies(relay) <= len(KILLS_AT) * at_once, f"{copies(relay)} emails came twice"

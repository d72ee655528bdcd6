"""The disk holding the data dir fills up in the middle of a stream of callers, against
the real `outofoffice serve` and a real SMTP server: callers get the 503 page with the
firm's phone and what they typed, the log names the disk, no vendor email goes out
twice, and once space returns new requests are taken and every accepted one is sent."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time

import pytest

from tests.faults.stream import MACHINE, Database, Relay, settle
from tests.faults.test_write_lock import (
    OFFICE,
    Callers,
    assert_told_to_phone_with_input_kept,
    database_file,
    post_whole,
    same_message_twice,
)
from tests.integration.test_scale_out import Installation
from tests.servers import Browser

pytestmark = pytest.mark.sqlite_only  # the data dir's disk; PostgreSQL keeps its own

DISK = "16m"  # the tmpfs: the firm's database and its log fit with room to spare
FULL_SECONDS = 3  # a few delivery passes and heartbeats meet the full disk too


def mount_tmpfs(folder) -> None:
    if os.geteuid() != 0:
        pytest.skip("a full disk is a tmpfs mounted for the test, and mounting needs root")
    folder.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def unmount(folder) -> None:
    if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # still busy: detach it


def fill(path) -> int:
    """Write until the disk refuses; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return written


def test_a_full_disk_refuses_callers_honestly_and_recovers(tmp_path, servers):
    data = tmp_path / MACHINE / "data"  # the Installation's data dir for this machine
    mount_tmpfs(data)
    server = None
    try:
        with Relay() as relay:
            inst = Installation(tmp_path, relay, servers)
            inst.set_up()
            cfg = inst.config(MACHINE)
            server = inst.serve(MACHINE)
            callers = Callers(server.url, 3, pause=0.1)
            try:
                callers.wait_for("accepted", 10)
                # the write-ahead log gives back what it holds, so the next write needs
                # new space at once (a disk filling slowly gets there a little later)
                conn = sqlite3.connect(database_file(cfg), timeout=10)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.close()
                filled = fill(data / "filler")
                full_at = time.monotonic()
                callers.wait_for("refused", 5, since=full_at)
                during = post_whole(server.url, "+1 555 9999", "No heating, two children")
                assert_told_to_phone_with_input_kept(
                    during, "+1 555 9999", "No heating, two children"
                )
                assert Browser(server.url).request("/r/alpha")[0] == 200  # reading works
                time.sleep(max(0.0, full_at + FULL_SECONDS - time.monotonic()))  # it lasts
                (data / "filler").unlink()
                freed_at = time.monotonic()
                callers.wait_for("accepted", 10, since=freed_at)
            finally:
                stream = callers.stop()
            counts = settle(stream, server, Database(cfg), relay)
            copies = same_message_twice(relay)
            log = server.output()
    finally:
        if server is not None:
            server.stop()  # its files on the tmpfs are closed before it goes
        unmount(data)
    refused = stream.of_kind("refused")
    counts.extra |= {
        "duplicates": counts.repeats(),
        "any_message_twice": len(copies),
        "filler_mb": round(filled / 2**20, 1),
        "refused_while_full": sum(1 for o in refused if full_at <= o.at <= freed_at + 1),
        "accepted_after_space_returned": callers.count("accepted", since=freed_at),
    }
    print(f"disk full: {counts}")
    assert counts.outcomes["other"] == 0, stream.of_kind("other")[:3]
    assert counts.outcomes["unreachable"] == 0, stream.of_kind("unreachable")[:3]
    assert counts.extra["refused_while_full"] >= 5
    untold = [o for o in refused if OFFICE not in o.detail]
    assert not untold, untold[0].detail
    assert "the disk holding the database" in log and "is full" in log
    # recovered: taken again, and everything accepted is stored and was sent once
    assert counts.extra["accepted_after_space_returned"] >= 10
    assert counts.accepted and counts.accepted <= counts.stored, counts.accepted - counts.stored
    assert set(counts.delivered) == counts.stored, counts.lost()
    assert counts.repeats() == 0 and not copies, copies

"""One `serve` with [server] processes = 3: three processes answer on one port, every
request is stored once whichever takes it, one that dies is started again, and all
stop with the one that started them. Outcomes are counted in the stats and the mail."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import base_sections, write_config
from tests.servers import Browser, routing_form, run_cli
from tests.smtp_sink import free_port

PROCESSES = 3


def children(pid: int) -> set[int]:
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def several(tmp_path, servers):
    """A serve of three web processes with the demo firm; (server, config)."""
    port = free_port()
    sections = base_sections(
        tmp_path,
        server={"base_url": f"http://127.0.0.1:{port}", "processes": PROCESSES},
        abuse={"dispatches_per_ip_per_hour": 10_000, "dispatches_per_account_per_hour": 10_000},
    )
    cfg = write_config(tmp_path / "config.toml", sections)
    run_cli(cfg, "demo", "--slug", "alpha")
    server = servers(tmp_path, "--config", str(cfg), port=port)
    wait_until(lambda: len(children(server.proc.pid)) == PROCESSES - 1)
    return server, cfg


def test_three_processes_answer_on_one_port_and_store_each_request_once(several, tmp_path):
    server, cfg = several
    page = Browser(server.url).request("/r/alpha")[2]
    answers: list[int] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        status = Browser(server.url).request("/r/alpha", routing_form(page, f"+1 555 02{n:02d}"))[0]
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [200] * 60  # each saw its status page
    report = json.loads(run_cli(cfg, "stats", "--json"))
    assert sum(report["dispatches"].values()) == 60
    web = [p for p in report["processes"] if p["role"].startswith("web")]
    assert len(web) == PROCESSES
    assert sum(p["role"] == "web+scheduler" for p in web) == 1

    wait_until(lambda: json.loads(run_cli(cfg, "stats", "--json"))["outbox"]["queued"] == 0)
    assert json.loads(run_cli(cfg, "stats", "--json"))["outbox"]["dead"] == 0
    # each request's vendor email and owner's notice, once each
    emails = list((tmp_path / "data" / "mail").glob("*.eml"))
    assert len(emails) == 2 * 60


@pytest.mark.sqlite_only
def test_a_web_process_that_dies_is_started_again_and_the_port_keeps_answering(several):
    server, _ = several
    before = children(server.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):  # meanwhile the others answer
        assert Browser(server.url).request("/healthz")[0] == 200
    wait_until(lambda: len(children(server.proc.pid) - {victim}) == PROCESSES - 1)
    assert "stopped with exit code -9; starting it again in 2 s" in server.output()


@pytest.mark.sqlite_only
def test_the_web_processes_stop_with_the_serve_that_started_them(several):
    server, _ = several
    started = children(server.proc.pid)
    server.proc.send_signal(signal.SIGKILL)  # no clean stop: the pipe tells them
    server.proc.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in started))

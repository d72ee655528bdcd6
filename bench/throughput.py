"""Throughput against a bare baseline, side by side in one run: the product's routing
page and a caller's status page against a bare bottle + waitress hello, and the
product's dispatch POST against a bare one-row SQLite insert with the same
durability. Each figure and each ratio.

    python bench/throughput.py [--rounds 3] [--seconds 8] [--connections 16]

Needs wrk (`apt install wrk`) and the test extras (aiosmtpd, for the real SMTP server
the product's scheduler delivers to). Only loopback traffic; bounded in time. The
rounds alternate product and bare, so both meet the same machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from dispatch_latency import BENCH, cli, demo_installation, free_port, start_sink

# wrk's Lua: a POST with a fresh phone number per request (so none joins an earlier
# one as a repeat), numbered apart per wrk thread.
POST_SCRIPT = """
local counter = 0
local threads = 0
function setup(thread)
  thread:set("first", threads * 10000000)
  threads = threads + 1
end
function init(args)
  counter = first
end
function request()
  counter = counter + 1
  local body = string.format(BODY, counter)
  return wrk.format("POST", PATH, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""


def wait_for(port: int, path: str) -> str:
    for _ in range(200):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            return connection.getresponse().read().decode()
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers on port {port}")


def wrk(port: int, path: str, seconds: float, connections: int, script: Path | None) -> dict:
    """Requests per second and the p99 latency (ms), as wrk measured them."""
    command = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        *(["-s", str(script)] if script else []),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p99": p99, "errors": int(errors.group(1)) if errors else 0}


def post_script(workdir: Path, name: str, path: str, fields: dict[str, str]) -> Path:
    body = urllib.parse.urlencode(fields).replace("%", "%%").replace("PHONE", "%07d")
    script = workdir / f"{name}.lua"
    script.write_text(f'PATH = "{path}"\nBODY = "{body}"\n{POST_SCRIPT}')
    return script


def start_product(
    workdir: Path, threads: int, processes: int = 1
) -> tuple[list[subprocess.Popen], int, dict]:
    smtp_port, port = free_port(), free_port()
    sink, _ = start_sink(smtp_port)
    config = demo_installation(
        workdir,
        port,
        smtp_port,
        threads,
        f"connections_per_address = 1000\nprocesses = {processes}\n",
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "outofoffice", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    page = wait_for(port, "/r/bench-firm")
    every_process_beats(config, processes)
    fields = {
        "subject": re.search(r'<option value="(\d+)">', page).group(1),
        "category": re.search(r'name="category" value="(\d+)"', page).group(1),
        "name": "Bench Caller",
        "phone": "+1 555 PHONE",
        "description": "Water through the kitchen ceiling",
        "form_token": re.search(r'name="form_token" value="([^"]+)"', page).group(1),
    }
    return [serve, sink], port, fields


def status_path(port: int, fields: dict[str, str]) -> str:
    """A caller's status page: one request submitted, its redirect followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = urllib.parse.urlencode({**fields, "phone": "+1 555 0100000"})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    connection.request("POST", "/r/bench-firm", body, headers)
    answer = connection.getresponse()
    answer.read()
    if answer.status != 303:
        raise SystemExit(f"the bench request was not taken ({answer.status})")
    return urllib.parse.urlsplit(answer.getheader("Location")).path


def every_process_beats(config: Path, processes: int) -> None:
    """Until serve's other web processes answer too (connections wrk opens before that
    would all stay with the first)."""
    for _ in range(100):
        report = json.loads(cli(config, "stats", "--json"))
        if sum(p["role"].startswith("web") for p in report["processes"]) >= processes:
            return
        time.sleep(0.1)
    raise SystemExit(f"{processes} web processes did not all start")


def outbox_empty(port: int) -> None:
    """Until the product has sent what the last round queued: a round measures the
    pages, not the delivery of the round before."""
    for _ in range(1200):
        health = json.loads(wait_for(port, "/healthz"))
        if health["outbox_backlog"] == 0:
            return
        time.sleep(0.1)
    raise SystemExit("the outbox did not empty in two minutes")


def start_bare(workdir: Path, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "bare_app.py"),
            str(port),
            str(workdir / "bare.db"),
            str(threads),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # waitress's "Task queue depth" warnings
        text=True,
    )
    assert bare.stdout.readline().strip() == "ready"
    wait_for(port, "/hello")
    return bare, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8, help="server threads, both apps")
    parser.add_argument(
        "--processes", type=int, default=1, help="[server] processes of the product's serve"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="oop-throughput-"))
    product, port, fields = start_product(workdir, args.threads, args.processes)
    bare, bare_port = start_bare(workdir, args.threads)
    dispatch_post = post_script(workdir, "dispatch", "/r/bench-firm", fields)
    insert_post = post_script(workdir, "insert", "/insert", {"description": "row PHONE"})
    pairs = [
        (
            "GET routing page vs GET hello",
            (port, "/r/bench-firm", None),
            (bare_port, "/hello", None),
        ),
        (
            "GET status page vs GET hello",
            (port, status_path(port, fields), None),
            (bare_port, "/hello", None),
        ),
        (
            "POST dispatch vs POST one-row insert",
            (port, "/r/bench-firm", dispatch_post),
            (bare_port, "/insert", insert_post),
        ),
    ]
    seconds, connections = args.seconds, args.connections
    print(
        f"{args.rounds} rounds, {seconds:g} s each, {connections} connections, "
        f"{args.threads} server threads, {args.processes} product process(es)"
    )
    try:
        for round_number in range(1, args.rounds + 1):
            for name, ours, theirs in pairs:
                outbox_empty(port)
                mine = wrk(*ours[:2], seconds, connections, ours[2])
                base = wrk(*theirs[:2], seconds, connections, theirs[2])
                print(
                    f"round {round_number}  {name}: product {mine['rate']:.0f} req/s "
                    f"(p99 {mine['p99']:.0f} ms, {mine['errors']} errors), bare "
                    f"{base['rate']:.0f} req/s (p99 {base['p99']:.1f} ms), "
                    f"ratio {mine['rate'] / base['rate']:.2f}",
                    flush=True,
                )
    finally:
        for process in [*product, bare]:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Dispatch latency: from a caller's submit to the SMTP server accepting the vendor email.

Starts `outofoffice serve` on a free loopback port with a throw-away data dir, a real
SMTP server (aiosmtpd) in this process, and a sample firm; then submits requests at a
steady rate and prints throughput and latency percentiles.

    python bench/dispatch_latency.py --rate 50 --seconds 20
    python bench/dispatch_latency.py --find-max --rate 60 --seconds 10

Needs the test extras (aiosmtpd). Only loopback traffic; bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def cli(config: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "outofoffice", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """The CPU time of a process and of the processes it started (serve's other web
    processes), while they run."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return cpu_seconds(pid) + sum(tree_cpu_seconds(child) for child in children)


def read_sink(sink: subprocess.Popen, accepted: dict[int, float]) -> None:
    for line in sink.stdout:
        tag, _, at = line.strip().partition(" ")
        if at:
            accepted.setdefault(int(tag), float(at))


def demo_installation(
    workdir: Path, port: int, smtp_port: int, threads: int, extra: str = "", smtp: str = ""
) -> Path:
    """A throw-away installation with the demo firm, mailing a real SMTP server, with no
    hourly limits in the way; its config file."""
    config = workdir / "config.toml"
    config.write_text(
        f'[server]\nbase_url = "http://127.0.0.1:{port}"\nport = {port}\n'
        f"threads = {threads}\n{extra}"
        f'[storage]\ndata_dir = "{workdir / "data"}"\n'
        f'[mail]\nbackend = "smtp"\n[mail.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
        'security = "none"\n'
        f"{smtp}"
        "[abuse]\ndispatches_per_ip_per_hour = 1000000\n"
        "dispatches_per_account_per_hour = 1000000\n"
    )
    cli(config, "migrate")
    cli(config, "demo", "--slug", "bench-firm")
    return config


def start_sink(port: int) -> tuple[subprocess.Popen, dict[int, float]]:
    """The SMTP server in its own process, and the map of request number -> when its
    first email was accepted, filled as they arrive."""
    sink = subprocess.Popen(
        [sys.executable, str(BENCH / "smtp_sink.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout.readline().strip() == "ready"
    accepted: dict[int, float] = {}
    threading.Thread(target=read_sink, args=(sink, accepted), daemon=True).start()
    return sink, accepted


@dataclass
class Run:
    """What one run at one rate measured."""

    rate: float
    sent: int
    achieved: float  # the submit rate the callers managed
    failed: int
    latencies: list[float]  # ms, submit -> the SMTP server accepting the vendor email
    delivered_rate: float
    http_ms: list[float]
    server_cpu_ms: float  # per dispatch
    sink_cpu_ms: float
    callers_cpu_ms: float

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99) if self.latencies else float("inf")

    @property
    def holds(self) -> bool:
        """Every vendor email arrived, the callers kept the rate, and the p99 is under
        TARGET_P99_MS."""
        return (
            not self.failed
            and len(self.latencies) == self.sent
            and self.achieved >= 0.95 * self.rate
            and self.p99 < TARGET_P99_MS
        )


TARGET_P99_MS = 300


def measure(args: argparse.Namespace, rate: float) -> Run:
    """A fresh installation, callers at ``rate`` for ``args.seconds``, then stop."""
    smtp_port, port = free_port(), free_port()
    sink, accepted = start_sink(smtp_port)
    workdir = Path(tempfile.mkdtemp(prefix="oop-bench-"))
    config = demo_installation(
        workdir,
        port,
        smtp_port,
        args.threads,
        f"processes = {args.processes}\n",
        f"connections = {args.smtp_connections}\n",
    )
    command = [sys.executable, "-m", "outofoffice", "--config", str(config)]
    processes = [
        subprocess.Popen(
            [*command, "serve", *(["--no-scheduler"] if args.split else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    if args.split:
        processes.append(
            subprocess.Popen(
                [*command, "worker"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    page = ""
    for _ in range(100):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/r/bench-firm")
            page = connection.getresponse().read().decode()
            break
        except OSError:
            time.sleep(0.1)
    if not page:
        raise SystemExit("the server did not start")
    subject = re.search(r'<option value="(\d+)">', page).group(1)
    category = re.search(r'name="category" value="(\d+)"', page).group(1)
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)  # lasts hours

    total = int(rate * args.seconds)
    sent_at: dict[int, float] = {}
    http_times: list[float] = []
    failures: list[int] = []
    local = threading.local()
    # CPU from here on: the start-up is not the dispatches'
    callers_before = cpu_seconds(os.getpid())
    server_before = sum(tree_cpu_seconds(p.pid) for p in processes)
    sink_before = cpu_seconds(sink.pid)

    def submit(n: int) -> None:
        """One caller's POST, on a kept-alive connection; the 303 is not followed."""
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = urllib.parse.urlencode(
            {
                "subject": subject,
                "category": category,
                "name": f"Bench Caller {n}",
                "phone": f"+1 555 {n:07d}",
                "description": f"Load test request bench-{n}-end",
                "form_token": token,
            }
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        start = time.perf_counter()
        sent_at[n] = time.time()
        try:
            local.connection.request("POST", "/r/bench-firm", body, headers)
            response = local.connection.getresponse()
            response.read()
            if response.status != 303:
                failures.append(n)
        except OSError:
            failures.append(n)
            local.connection = None
        http_times.append(time.perf_counter() - start)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        for n in range(total):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(submit, n)
    submit_seconds = time.perf_counter() - began
    deadline = time.monotonic() + 60
    while len(accepted) < total - len(failures) and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = sum(tree_cpu_seconds(p.pid) for p in processes) - server_before
    sink_cpu = cpu_seconds(sink.pid) - sink_before
    callers_cpu = cpu_seconds(os.getpid()) - callers_before
    for process in processes:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    sink.terminate()
    sink.wait(timeout=30)
    shutil.rmtree(workdir, ignore_errors=True)

    latencies = [(accepted[n] - sent_at[n]) * 1000 for n in accepted if n in sent_at]
    first = min(sent_at.values())
    span = max(accepted.values(), default=first) - first
    return Run(
        rate=rate,
        sent=total,
        achieved=total / submit_seconds,
        failed=len(failures),
        latencies=latencies,
        delivered_rate=len(latencies) / span if span else 0.0,
        http_ms=[x * 1000 for x in http_times],
        server_cpu_ms=cpu / total * 1000,
        sink_cpu_ms=sink_cpu / total * 1000,
        callers_cpu_ms=callers_cpu / total * 1000,
    )


def report(run: Run, args: argparse.Namespace) -> None:
    print(
        f"dispatches sent:      {run.sent} at {run.rate:g}/s for {args.seconds:g} s "
        f"({run.achieved:.1f}/s achieved), refused or failed {run.failed}"
    )
    print(
        f"vendor emails:        {len(run.latencies)} accepted by the SMTP server "
        f"({run.delivered_rate:.1f}/s end to end)"
    )
    if run.latencies:
        p50, p95, p99 = (percentile(run.latencies, p) for p in (50, 95, 99))
        print(
            f"submit -> SMTP (ms):  p50 {p50:.0f}  p95 {p95:.0f}  p99 {p99:.0f}  "
            f"max {max(run.latencies):.0f}"
        )
    p50, p95, p99 = (percentile(run.http_ms, p) for p in (50, 95, 99))
    print(
        f"HTTP submit (ms):     p50 {p50:.0f}  p95 {p95:.0f}  p99 {p99:.0f}  "
        f"mean {statistics.mean(run.http_ms):.0f}"
    )
    print(f"server CPU:           {run.server_cpu_ms:.1f} ms per dispatch (web and email)")
    print(
        f"beside it:            SMTP server {run.sink_cpu_ms:.1f} ms, callers "
        f"{run.callers_cpu_ms:.1f} ms per dispatch (the same {os.cpu_count()} cores)"
    )


def find_max(args: argparse.Namespace) -> None:
    """The highest rate that holds (every vendor email, p99 under TARGET_P99_MS): up in
    steps of ``--step`` from ``--rate`` until one fails, then halving the gap."""
    held, failed = 0.0, None
    rate = args.rate
    while failed is None or failed - held > args.resolution:
        run = measure(args, rate)
        verdict = "holds" if run.holds else "does not hold"
        print(
            f"  {rate:6.1f}/s: {verdict}: delivered {run.delivered_rate:.1f}/s, p99 "
            f"{run.p99:.0f} ms, server CPU {run.server_cpu_ms:.1f} ms per dispatch",
            flush=True,
        )
        if run.holds:
            held = rate
            rate = rate + args.step if failed is None else (held + failed) / 2
        else:
            failed = rate
            rate = (held + failed) / 2
            if held == 0 and failed - held <= args.resolution:
                break
    print(f"highest rate that holds: {held:g}/s (p99 under {TARGET_P99_MS} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="dispatches per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long to send")
    parser.add_argument("--threads", type=int, default=8, help="server threads")
    parser.add_argument(
        "--processes", type=int, default=1, help="[server] processes: web processes of serve"
    )
    parser.add_argument("--smtp-connections", type=int, default=4, help="[mail.smtp] connections")
    parser.add_argument(
        "--split",
        action="store_true",
        help="serve --no-scheduler plus a separate `outofoffice worker` process",
    )
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="from --rate up by --step until a rate fails, then halve the gap",
    )
    parser.add_argument("--step", type=float, default=20, help="--find-max: rate step")
    parser.add_argument(
        "--resolution", type=float, default=5, help="--find-max: stop when the gap is this"
    )
    args = parser.parse_args()
    mode = "serve --no-scheduler + worker" if args.split else "serve (web and scheduler)"
    print(
        f"setup:                {mode}, {args.threads} threads, {args.processes} "
        f"process(es), {args.smtp_connections} SMTP connections"
    )
    print(f"machine:              {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if args.find_max:
        find_max(args)
    else:
        report(measure(args, args.rate), args)


if __name__ == "__main__":
    main()

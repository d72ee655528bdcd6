"""Scale-out: how many dispatches per second one process on SQLite, and 1, 2 and 4
processes on one PostgreSQL, carry with submit -> vendor email p99 under 300 ms, in one
run on this machine.

    python bench/scale_out.py [--seconds 10] [--rates 20,30,40,...] [--setups sqlite:1,pg:1,pg:2,pg:4]

Each setup is a fresh installation: a real SMTP server (bench/smtp_sink.py, its own
process), --firms demo firms, N `outofoffice serve` processes (each with its scheduler)
on one database and one secret key, and callers posting at a fixed rate spread evenly
over the processes and the firms, each sender thread from a loopback address of its
own (a hoster's many callers and firms; one firm's requests, and one address's, take
their turn, since its hourly limit and its repeat check read before they write). PostgreSQL is a cluster of its own in a temporary folder, with fsync on
(as SQLite runs with synchronous=FULL). For each setup the rates are tried in order
until one does not hold: a rate holds when every vendor email arrives and the p99 from
submit to the SMTP server accepting the vendor email is under 300 ms.

Needs the test extras and Debian's postgresql. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dispatch_latency import BENCH, cli, cpu_seconds, free_port, percentile, start_sink

sys.path.insert(0, str(BENCH.parent))
from tests import postgres  # noqa: E402  (the tests' PostgreSQL cluster helper)

P99_TARGET_MS = 300


class Installation:
    def __init__(self, kind: str, processes: int, firms: int, smtp_port: int, url: str = ""):
        self.workdir = Path(tempfile.mkdtemp(prefix="oop-scale-"))
        self.ports = [free_port() for _ in range(processes)]
        self.configs = []
        for i, port in enumerate(self.ports):
            folder = self.workdir / f"m{i}"
            folder.mkdir()
            storage = f'database = "{url}"\n' if kind == "pg" else ""
            config = folder / "config.toml"
            config.write_text(
                f'[server]\nbase_url = "http://127.0.0.1:{self.ports[0]}"\nport = {port}\n'
                f'[storage]\ndata_dir = "{self.workdir / "data" if kind == "sqlite" else folder}"\n'
                f"{storage}"
                f'[security]\nsecret_key_file = "{self.workdir / "secret.key"}"\n'
                f'[mail]\nbackend = "smtp"\n[mail.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
                'security = "none"\n'
                "[abuse]\ndispatches_per_ip_per_hour = 1000000\n"
                "dispatches_per_account_per_hour = 1000000\n"
            )
            self.configs.append(config)
        cli(self.configs[0], "migrate")
        self.slugs = [f"bench-firm-{i}" for i in range(firms)]
        for slug in self.slugs:
            cli(self.configs[0], "demo", "--slug", slug)
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "outofoffice", "--config", str(c), "serve"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for c in self.configs
        ]
        for port in self.ports:
            self._page(port, self.slugs[0])
        self.forms = {slug: self._form(self._page(self.ports[0], slug)) for slug in self.slugs}

    @staticmethod
    def _page(port: int, slug: str) -> str:
        for _ in range(150):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", f"/r/{slug}")
                return connection.getresponse().read().decode()
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the server on port {port} did not start")

    @staticmethod
    def _form(page: str) -> dict:
        """The fields a caller's browser would send, from the firm's routing page."""
        import re

        return {
            "subject": re.search(r'<option value="(\d+)">', page).group(1),
            "category": re.search(r'name="category" value="(\d+)"', page).group(1),
            "form_token": re.search(r'name="form_token" value="([^"]+)"', page).group(1),
        }

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(timeout=30)


def load(inst: Installation, accepted: dict, first: int, rate: float, seconds: float) -> dict:
    """Callers at a fixed rate, round-robin over the processes and firms; the step's
    figures."""
    total = int(rate * seconds)
    sent_at: dict[int, float] = {}
    failures: list[int] = []
    local = threading.local()
    addresses = iter(range(2, 250))
    lock = threading.Lock()

    def submit(n: int) -> None:
        port = inst.ports[n % len(inst.ports)]
        slug = inst.slugs[(n // len(inst.ports)) % len(inst.slugs)]
        if not hasattr(local, "address"):
            with lock:
                local.address = f"127.0.0.{next(addresses)}"
        connections = local.__dict__.setdefault("connections", {})
        if port not in connections:
            connections[port] = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=30, source_address=(local.address, 0)
            )
        body = urllib.parse.urlencode(
            inst.forms[slug]
            | {
                "name": f"Bench Caller {n}",
                "phone": f"+1 555 {n:07d}",
                "description": f"Load test request bench-{n}-end",
            }
        )
        sent_at[n] = time.time()
        try:
            connections[port].request(
                "POST", f"/r/{slug}", body, {"Content-Type": "application/x-www-form-urlencoded"}
            )
            response = connections[port].getresponse()
            response.read()
            if response.status != 303:
                failures.append(n)
        except OSError:
            failures.append(n)
            del connections[port]

    cpu_before = inst.cpu()
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i in range(total):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(submit, first + i)
    numbers = range(first, first + total)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(n in accepted for n in numbers) < total - len(
        failures
    ):
        time.sleep(0.05)
    latencies = [(accepted[n] - sent_at[n]) * 1000 for n in numbers if n in accepted]
    return {
        "rate": rate,
        "sent": total,
        "failed": len(failures),
        "delivered": len(latencies),
        "p50": percentile(latencies, 50) if latencies else None,
        "p99": percentile(latencies, 99) if latencies else None,
        "cpu_ms": (inst.cpu() - cpu_before) / total * 1000,
    }


def holds(step: dict) -> bool:
    return (
        step["failed"] == 0
        and step["delivered"] == step["sent"]
        and step["p99"] is not None
        and step["p99"] < P99_TARGET_MS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each rate step")
    parser.add_argument("--rates", default="20,30,40,50,60,70,80,90,100,110,120,140,160")
    parser.add_argument("--setups", default="sqlite:1,pg:1,pg:2,pg:4")
    parser.add_argument("--firms", type=int, default=10, help="demo firms callers spread over")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    setups = [(kind, int(n)) for kind, n in (s.split(":") for s in args.setups.split(","))]

    bin_dir = postgres.binaries()
    cluster = postgres.Cluster(bin_dir, durable=True).start() if bin_dir else None
    smtp_port = free_port()
    sink, accepted = start_sink(smtp_port)
    results = {}
    counter = 0
    try:
        for kind, count in setups:
            if kind == "pg" and cluster is None:
                print("PostgreSQL is not installed (apt-get install postgresql): skipping", kind)
                continue
            url = cluster.url(cluster.create_database()) if kind == "pg" else ""
            inst = Installation(kind, count, args.firms, smtp_port, url)
            best = None
            try:
                for rate in rates:
                    step = load(inst, accepted, counter, rate, args.seconds)
                    counter += step["sent"]
                    print(
                        f"{kind}:{count}  {rate:5.0f}/s  delivered {step['delivered']}/{step['sent']}"
                        f"  p50 {step['p50'] or 0:.0f} ms  p99 {step['p99'] or 0:.0f} ms"
                        f"  CPU {step['cpu_ms']:.1f} ms/dispatch",
                        flush=True,
                    )
                    if not holds(step):
                        break
                    best = step
            finally:
                inst.stop()
            results[(kind, count)] = best
    finally:
        sink.terminate()
        if cluster:
            cluster.stop()

    print()
    print("| setup | highest rate that holds | p50 | p99 | server CPU per dispatch |")
    print("| --- | --- | --- | --- | --- |")
    names = {"sqlite": "SQLite", "pg": "PostgreSQL"}
    for (kind, count), best in results.items():
        label = f"{count} process{'es' * (count > 1)} on {names[kind]}"
        if best is None:
            print(f"| {label} | none of the rates | | | |")
        else:
            print(
                f"| {label} | {best['rate']:.0f}/s | {best['p50']:.0f} ms | {best['p99']:.0f} ms"
                f" | {best['cpu_ms']:.1f} ms |"
            )
    base = results.get(("pg", 1))
    if base:
        for (kind, count), best in results.items():
            if best and (kind, count) != ("pg", 1):
                print(f"{names[kind]} x{count} / PostgreSQL x1: {best['rate'] / base['rate']:.2f}")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

"""Start-up time and idle memory: from starting `outofoffice serve` to the first 200
from /healthz, on a fresh data dir (migrations and the secret key made) and again on
the same one, and the resident memory once it idles; the bare bottle + waitress app
(bench/bare_app.py) measured the same way, in the same run.

    python bench/startup.py [--rounds 5] [--processes 1]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dispatch_latency import BENCH, free_port

IDLE_SECONDS = 5  # the scheduler's first jobs have run by then


def ready_after(proc: subprocess.Popen, port: int, path: str) -> float:
    """Seconds from now until ``path`` answers 200."""
    began = time.perf_counter()
    while time.perf_counter() - began < 30:
        if proc.poll() is not None:
            raise SystemExit(f"the process exited with {proc.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return time.perf_counter() - began
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"nothing answered 200 on {path}")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and the processes it started."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    children = [
        int(c)
        for t in Path(f"/proc/{pid}/task").iterdir()
        for c in (t / "children").read_text().split()
    ]
    return total / 1024 + sum(rss_mib(c) for c in children)


def product(workdir: Path, processes: int) -> tuple[float, float]:
    port = free_port()
    config = workdir / "config.toml"
    config.write_text(
        f'[server]\nport = {port}\nprocesses = {processes}\n[storage]\ndata_dir = "{workdir}/data"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "outofoffice", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    took = ready_after(proc, port, "/healthz")  # ready_after starts its clock at once
    time.sleep(IDLE_SECONDS)
    memory = rss_mib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return took, memory


def bare(workdir: Path) -> tuple[float, float]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "bare_app.py"), str(port), str(workdir / "bare.db"), "8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    took = ready_after(proc, port, "/hello")
    time.sleep(IDLE_SECONDS)
    memory = rss_mib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return took, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1, help="[server] processes")
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {"fresh": [], "again": [], "bare": []}
    for _ in range(args.rounds):
        workdir = Path(tempfile.mkdtemp(prefix="oop-startup-"))
        figures["fresh"].append(product(workdir, args.processes))
        figures["again"].append(product(workdir, args.processes))
        figures["bare"].append(bare(workdir))
        shutil.rmtree(workdir, ignore_errors=True)
    base_start = statistics.median(t for t, _ in figures["bare"])
    base_memory = statistics.median(m for _, m in figures["bare"])
    print(f"{args.rounds} rounds, {args.processes} process(es); medians, then the range")
    for name, runs in figures.items():
        starts, memories = [t * 1000 for t, _ in runs], [m for _, m in runs]
        print(
            f"{name:>6}: start to 200 {statistics.median(starts):.0f} ms "
            f"({min(starts):.0f}-{max(starts):.0f}), ratio "
            f"{statistics.median(starts) / 1000 / base_start:.1f}; idle RSS "
            f"{statistics.median(memories):.1f} MiB ({min(memories):.1f}-{max(memories):.1f}), "
            f"ratio {statistics.median(memories) / base_memory:.1f}"
        )


if __name__ == "__main__":
    main()

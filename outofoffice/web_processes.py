"""More web processes for one `serve`: Python runs one thread at a time per process, so
a busy installation uses a second core only through a second process. `serve` opens
the listening socket itself and starts [server] processes - 1 more `serve
--no-scheduler` processes that answer on that very socket (the kernel hands each new
connection to whichever process takes it first, so an idle one takes more); it restarts
one that dies, and stops them when it stops. Each one stops by itself if its parent
dies (a pipe from the parent reaches its end)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from outofoffice.config import Config

log = logging.getLogger(__name__)

RESTART_PAUSE = 2.0  # seconds before a process that died is started again,
RESTART_PAUSE_MAX = 60.0  # doubled up to this while each dies soon after its start
RAN_WELL = 30.0  # seconds: a process that ran this long starts the pause over
STOP_WAIT = 20.0  # seconds a process may take to finish its requests when told to stop


def wanted(config: Config) -> int:
    """How many web processes [server] processes asks for (0: one per core)."""
    return config.server.processes or os.cpu_count() or 1


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket every web process accepts on, bound here once."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class WebProcesses:
    """The extra web processes of this `serve`, kept running until stop()."""

    def __init__(self, config: Config, host: str, port: int, sock: socket.socket, count: int):
        self.config, self.host, self.port, self.sock = config, host, port, sock
        self.count = count
        self._stopping = threading.Event()
        self._procs: list[subprocess.Popen | None] = [None] * count
        self._lock = threading.Lock()
        # the children hold the reading end; when this process ends, so does the pipe
        self._child_end, self._parent_end = os.pipe()
        self._watchers: list[threading.Thread] = []

    def _command(self) -> list[str]:
        config_args = ["--config", str(self.config.source)] if self.config.source else []
        return [
            sys.executable,
            "-m",
            "outofoffice",
            *config_args,
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--no-scheduler",
            "--listen-fd",
            str(self.sock.fileno()),
            "--parent-fd",
            str(self._child_end),
        ]

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603 - this very program, with its own config
            self._command(), pass_fds=(self.sock.fileno(), self._child_end), close_fds=True
        )

    def start(self) -> None:
        for slot in range(self.count):
            self._procs[slot] = self._spawn()
            watcher = threading.Thread(
                target=self._watch, args=(slot,), name=f"web-process-{slot + 1}", daemon=True
            )
            watcher.start()
            self._watchers.append(watcher)
        log.info("%d more web processes answer on the same socket", self.count)

    def _watch(self, slot: int) -> None:
        pause = RESTART_PAUSE
        while True:
            proc, started = self._procs[slot], time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            pause = RESTART_PAUSE if time.monotonic() - started >= RAN_WELL else pause
            log.error(
                "web process %d (pid %d) stopped with exit code %s; starting it again in %g s",
                slot + 1,
                proc.pid,
                code,
                pause,
            )
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, RESTART_PAUSE_MAX)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._procs[slot] = self._spawn()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    def stop(self) -> None:
        """Ask each to finish and stop (SIGTERM); one that does not within STOP_WAIT
        is killed."""
        with self._lock:
            self._stopping.set()
        procs = [p for p in self._procs if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("web process pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        for watcher in self._watchers:
            watcher.join(timeout=5)
        os.close(self._parent_end)
        os.close(self._child_end)


def stop_with_parent(parent_fd: int) -> None:
    """In a web process started by another `serve`: when that one is gone (the pipe it
    holds open reaches its end), stop as SIGTERM stops us."""

    def watch() -> None:
        while os.read(parent_fd, 1):
            pass
        log.warning("the serve process that started this one is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

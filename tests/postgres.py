"""A real PostgreSQL for the tests: a cluster of its own in a temporary folder, started
once per test session (initdb as an unprivileged user, fsync off), and a fresh database
per test."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.smtp_sink import free_port

REQUIRE = "OUTOFOFFICE_REQUIRE_POSTGRESQL"


def binaries() -> Path | None:
    """The newest PostgreSQL server's bin folder (Debian keeps it off PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


class Cluster:
    """One postgres server on a free loopback port, owned by an unprivileged user (the
    server refuses to run as root)."""

    def __init__(self, bin_dir: Path, durable: bool = False):
        self.bin = bin_dir
        self.durable = durable  # fsync on, as a real server runs (the benchmarks)
        self.root = Path(tempfile.mkdtemp(prefix="outofoffice-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if _exists("postgres") else "nobody"
            shutil.chown(self.root, self.user)
        self._names = itertools.count(1)

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self.user,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=True,
            **kwargs,
        )

    # a role that must give its password (the others are trusted): for password_file
    PASSWORD_ROLE, PASSWORD = "keeper", "S3cret-pw"

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        hba = self.data / "pg_hba.conf"
        line = f"host all {self.PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(line + hba.read_text())
        self.start_server()
        self.sql(f"CREATE ROLE {self.PASSWORD_ROLE} LOGIN PASSWORD '{self.PASSWORD}'")
        return self

    def start_server(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c max_connections=400 -c shared_buffers=128MB"
        )
        if not self.durable:
            # fsync off: a crash of the server (stop_server) leaves what it wrote in the
            # OS's cache. synchronous_commit stays on: off, a crash would also lose the
            # last commits it had acknowledged, such as a test's firm made just before
            options += " -c fsync=off -c full_page_writes=off"
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop_server(self) -> None:
        """Stop the server hard, as a crash would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def restart_server(self, mode: str = "fast") -> None:
        """`pg_ctl restart`, as an admin or an upgrade does: with ``fast`` the server
        ends every session, then comes back with the options it had."""
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", mode, "-w", "restart")

    def stop(self) -> None:
        try:
            self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, name: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        result = self._run(
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            statement,
        )
        return result.stdout.strip()

    def create_database(self, owner: str = "postgres") -> str:
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return name

    def drop_database(self, name: str) -> None:
        for _ in range(3):
            try:
                self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except subprocess.CalledProcessError:
                time.sleep(0.5)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True

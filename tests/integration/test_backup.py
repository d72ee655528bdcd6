"""`outofoffice backup` while callers are submitting, and a restore from it."""

import http.client
import os
import pty
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from tests.conftest import DATA, served_config, write_config
from tests.servers import run_cli
from tests.smtp_sink import free_port


def references(db_path) -> set[str]:
    with sqlite3.connect(db_path) as connection:
        return {row[0] for row in connection.execute('SELECT "reference" FROM "dispatch"')}


class Callers(threading.Thread):
    """Callers submitting the routing page one after another until stopped."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.sent, self.failed = port, 0, 0
        self.stopping = threading.Event()

    def run(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", "/r/lakeshore")
        page = connection.getresponse().read().decode()
        form = {
            "subject": re.search(r'<option value="(\d+)">', page).group(1),
            "category": re.search(r'name="category" value="(\d+)"', page).group(1),
            "form_token": re.search(r'name="form_token" value="([^"]+)"', page).group(1),
            "description": "Water coming through the ceiling",
        }
        while not self.stopping.is_set():
            n = self.sent + self.failed
            body = form | {"name": f"Caller {n}", "phone": f"+1 312 555 {n:04d}"}
            connection.request(
                "POST",
                "/r/lakeshore",
                urllib.parse.urlencode(body),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = connection.getresponse()
            response.read()
            if response.status == 303:
                self.sent += 1
            else:
                self.failed += 1


@pytest.mark.sqlite_only  # SQLite's online backup API; PostgreSQL has pg_dump
def test_a_backup_during_a_load_restores_every_dispatch_committed_before_it(tmp_path, servers):
    port = free_port()
    data = tmp_path / "data"
    cfg = served_config(
        tmp_path,
        port,
        abuse={"dispatches_per_ip_per_hour": 100_000, "dispatches_per_account_per_hour": 100_000},
    )
    run_cli(cfg, "import", str(DATA / "export-sample.json"))
    servers(tmp_path, "--config", str(cfg), port=port)
    callers = Callers(port)
    callers.start()
    try:
        deadline = time.monotonic() + 20
        while callers.sent < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = references(data / "outofoffice.db")  # committed before the backup began
        output = run_cli(cfg, "backup", str(tmp_path / "copy.db"))
        sent_at_backup = callers.sent
        time.sleep(0.5)
    finally:
        callers.stopping.set()
        callers.join(timeout=15)
    assert callers.failed == 0 and callers.sent > sent_at_backup >= 30  # load went on
    assert "wrote" in output and "secret key" in output
    copy = tmp_path / "copy.db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not (tmp_path / "copy.db.partial").exists()

    # the documented restore: the copy and the secret key into a data folder
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copy2(copy, restored / "outofoffice.db")
    shutil.copy2(data / "secret.key", restored / "secret.key")
    restored_cfg = write_config(
        tmp_path / "restored.toml",
        {"storage": {"data_dir": str(restored)}, "mail": {"backend": "file"}},
    )
    assert "all checks passed" in run_cli(restored_cfg, "check")
    got = references(restored / "outofoffice.db")
    assert before <= got and len(got) >= len(before) >= 30
    assert f"{len(got)} dispatch(es)" in output
    # the caller details read back with the key
    export = run_cli(restored_cfg, "export", "lakeshore")
    assert "Water coming through the ceiling" in export
    stats = run_cli(restored_cfg, "stats")
    assert re.search(rf"dispatches:\s+{len(got)}\b", stats)


def test_long_commands_show_a_progress_bar_on_a_terminal(tmp_path):
    cfg = write_config(
        tmp_path / "config.toml",
        {"storage": {"data_dir": str(tmp_path / "data")}, "mail": {"backend": "file"}},
    )
    shown = {}
    for name, args in {  # in this order: the import makes the firm the others use
        "importing": ["import", str(DATA / "export-sample.json")],
        "backing up": ["backup", str(tmp_path / "b.db")],
        "exporting": ["export", "lakeshore", "-o", str(tmp_path / "e.json")],
        "re-encrypting": ["rotate-key"],
    }.items():
        leader, follower = pty.openpty()
        process = subprocess.run(
            [sys.executable, "-m", "outofoffice", "--config", str(cfg), *args],
            stdout=subprocess.DEVNULL,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(leader)
        assert process.returncode == 0
        shown[name] = output.decode(errors="replace")
    for label, output in shown.items():
        assert label in output and "100%" in output, (label, output)
    # off a terminal there is no bar: cron mail and logs stay clean
    quiet = subprocess.run(
        [
            sys.executable,
            "-m",
            "outofoffice",
            "--config",
            str(cfg),
            "backup",
            str(tmp_path / "c.db"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert quiet.stderr == "" and "wrote" in quiet.stdout

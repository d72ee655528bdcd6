"""The real `outofoffice serve` process on a free loopback port, and a client for it."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from outofoffice.config import ENV_VAR


class ServerProcess:
    def __init__(
        self, cwd: Path, args: list[str], port: int, env: dict | None = None, serve_args=()
    ):
        self.cwd, self.args, self.port, self.serve_args = cwd, args, port, list(serve_args)
        self.env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | (env or {})
        self.log = cwd / f"serve-{port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "outofoffice",
                    *self.args,
                    "serve",
                    "--port",
                    str(self.port),
                    *self.serve_args,
                ],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return self
            except urllib.error.HTTPError:  # it answers; the test judges the answer
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise AssertionError(f"serve did not answer:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.proc.returncode if self.proc else 0

    def output(self) -> str:
        return self.log.read_text()


class Browser:
    """A cookie-keeping HTTP client that follows redirects, like a person's browser."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as response:
                return response.status, response.geturl(), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode()


# The owner most tests start with, as the admin would create her.
CREATE_ALPHA = [
    "accounts",
    "create",
    "--email",
    "ann@alpha.example",
    "--name",
    "Ann",
    "--business",
    "Alpha Properties",
    "--slug",
    "alpha",
    "--industry",
    "property_management",
]


def run_cli(config: Path, *args: str) -> str:
    """Run the real `outofoffice` command; its output, or a failure that shows why."""
    result = subprocess.run(
        [sys.executable, "-m", "outofoffice", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def routing_form(page: str, phone: str) -> dict:
    """A caller's answers to the routing page ``page``: its first subject and category,
    a phone of the test's choosing (each new phone is a new request, not a repeat), and
    the page's form token."""
    return {
        "subject": re.search(r'<option value="(\d+)">', page).group(1),
        "category": re.search(r'name="category" value="(\d+)"', page).group(1),
        "name": "Tina Tenant",
        "phone": phone,
        "description": "Pipe burst under the sink",
        "form_token": re.search(r'name="form_token" value="([^"]+)"', page).group(1),
    }

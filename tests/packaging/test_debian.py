"""The debian/ files agree with the product: `.ci/deb` builds and installs the
package; these checks keep its parts from drifting between those runs."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from outofoffice import config

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "debian"


def test_the_man_page_is_generated_from_the_current_cli():
    fresh = subprocess.run(
        [sys.executable, str(DEBIAN / "make-manpage")], capture_output=True, text=True, check=True
    ).stdout
    assert (DEBIAN / "outofoffice.1").read_text() == fresh, (
        "run: debian/make-manpage > debian/outofoffice.1"
    )
    for command in ("serve", "backup", "stats", "rotate-key", "abuse block"):
        assert f".SS {command.replace('-', chr(92) + '-')}" in fresh


def test_the_packaged_config_loads_points_at_var_lib_and_holds_no_secret():
    path = DEBIAN / "conf" / "config.toml"
    loaded = config.load(path)
    assert loaded.data_dir == Path("/var/lib/outofoffice")
    assert loaded.secret_key_path == Path("/var/lib/outofoffice/secret.key")
    raw = tomllib.loads(path.read_text())
    secrets = {"password", "api_key", "database", "secret_key"}

    def keys(table):
        for key, value in table.items():
            yield key
            if isinstance(value, dict):
                yield from keys(value)

    assert not secrets & set(keys(raw))


def test_the_unit_runs_the_documented_command_hardened():
    unit = (DEBIAN / "outofoffice.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["ExecStart"] == (
        "/usr/bin/outofoffice --config /etc/outofoffice/config.toml serve"
    )
    assert settings["User"] == "outofoffice" and settings["StateDirectory"] == "outofoffice"
    assert settings["Restart"] == "on-failure" and settings["UMask"] == "0027"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert settings[key] == "yes", key
    assert settings["ProtectSystem"] == "strict"
    assert settings["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"


def test_every_lintian_override_says_why():
    for path in DEBIAN.glob("*lintian-overrides"):
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if line and not line.startswith("#"):
                assert n > 0 and lines[n - 1].startswith("#"), f"{path.name}:{n + 1}"


def test_the_package_version_is_the_products():
    from outofoffice import __version__

    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"outofoffice ({__version__})")

"""A built wheel carries the templates and static files, and the console script."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_templates_static_files_and_the_command(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("outofoffice-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    source = ROOT / "outofoffice"
    for folder in ("templates", "static"):
        for path in (source / folder).rglob("*"):
            if path.is_file():
                assert f"outofoffice/{path.relative_to(source)}" in names, path
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "outofoffice = outofoffice.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )

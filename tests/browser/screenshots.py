"""Regenerate the screenshots docs/screenshots.md shows, into docs/screenshots/.

    python tests/browser/screenshots.py

It runs the browser tests that visit those pages (the same real server, demo firm and
Chromium as the suite, see docs/screenshots.md) with OUTOFOFFICE_SCREENSHOTS pointed
at a temporary folder, then copies the chosen screenshots under their published names.
The tests take their screenshots before they judge the page, so a failing check still
leaves its picture; the script prints the test run's summary and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "docs" / "screenshots"

# published name -> the test suite's name (<journey>-<page>-<size>.png)
SHOTS = {
    "phone-routing.png": "caller-routing-phone.png",
    "phone-routing-error.png": "caller-routing-error-phone.png",
    "phone-status.png": "caller-status-phone.png",
    "phone-vendor.png": "vendor-action-phone.png",
    "phone-overview.png": "owner-overview-phone.png",
    "phone-dispatches.png": "owner-dispatches-phone.png",
    "desktop-overview.png": "owner-overview-desktop.png",
    "desktop-dispatch.png": "owner-dispatch-desktop.png",
}
TESTS = [
    "tests/browser/test_caller_screens.py::test_routing_page",
    "tests/browser/test_caller_screens.py::test_routing_page_after_a_wrong_phone_number",
    "tests/browser/test_caller_screens.py::test_status_page_after_a_good_request",
    "tests/browser/test_vendor_screens.py::test_action_page",
    "tests/browser/test_owner_screens.py::test_every_area_the_dashboard_lists",
    "tests/browser/test_owner_screens.py::test_one_dispatch",
]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="oop-screenshots-") as folder:
        env = os.environ | {"OUTOFOFFICE_SCREENSHOTS": folder}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=ROOT,
            env=env,
            check=False,
        )
        TARGET.mkdir(parents=True, exist_ok=True)
        missing = []
        for published, taken in SHOTS.items():
            source = Path(folder) / taken
            if source.exists():
                shutil.copyfile(source, TARGET / published)
                print(f"wrote {(TARGET / published).relative_to(ROOT)}")
            else:
                missing.append(taken)
    if run.returncode:
        print("note: some checks failed on these pages (see above); the pictures show them")
    if missing:
        print(f"not taken: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real Chromium (Debian's package) driven by Playwright's Python package.

Without Chromium, or without axe-core (the axe-playwright-python package of the `test`
extra), these tests skip, except where OUTOFOFFICE_REQUIRE_BROWSER=1 (CI), where a
missing browser or axe-core is a failed install step.
"""

import os
import shutil

import pytest

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "")
        if p and os.path.exists(p)
    ),
    None,
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        if os.environ.get("OUTOFOFFICE_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def axe(browser):
    """axe-core's source, to inject into pages (skips like the browser, or fails in CI)."""
    from tests.browser.screens import axe_source

    return axe_source()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory):
    """$OUTOFOFFICE_SCREENSHOTS, or a folder under pytest's temporary path."""
    from tests.browser.screens import screenshot_folder

    TAKEN["folder"] = screenshot_folder(tmp_path_factory)
    return TAKEN["folder"]


TAKEN: dict = {}


def pytest_terminal_summary(terminalreporter):
    if TAKEN.get("folder"):
        terminalreporter.write_line(f"browser screenshots: {TAKEN['folder']}")

"""Every test in tests/faults/ carries the ``faults`` marker, so CI can run the fault
suite in one pass of its own (``-m faults``) or leave it out (``-m "not faults"``)."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)


# What each scenario printed (its counts), repeated at the end of the run: pytest keeps
# a passing test's output to itself, and the counts are what a reader of CI looks for.
def pytest_terminal_summary(terminalreporter):
    printed = [
        (report.nodeid, report.capstdout.rstrip())
        for kind in ("passed", "failed")
        for report in terminalreporter.stats.get(kind, [])
        if report.when == "call" and "faults" in report.keywords and report.capstdout
    ]
    if printed:
        terminalreporter.section("fault scenarios: counts")
        for nodeid, text in printed:
            terminalreporter.write_line(f"{nodeid}\n{text}")

"""Every test in tests/faults/ carries the ``faults`` marker, so CI can run the fault
suite in one pass of its own (``-m faults``) or leave it out (``-m "not faults"``)."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)

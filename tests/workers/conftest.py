"""The worker-group tests: ``@pytest.mark.soak`` variants are deselected unless ``-m`` names soak or
``CDC_SOAK=1`` (the rule of tests/faults/conftest.py, for this directory when it runs alone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CDC_SOAK") == "1" or "soak" in (config.getoption("markexpr", "") or ""):
        return
    dropped = [item for item in items if item.get_closest_marker("soak") is not None and HERE in item.path.parents]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]

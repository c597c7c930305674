"""The full mutation check (``@pytest.mark.mutation``) runs only when asked: ``pytest -m mutation``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "mutation" in (config.getoption("markexpr", "") or ""):
        return
    dropped = [item for item in items if item.get_closest_marker("mutation") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.get_closest_marker("mutation") is None]

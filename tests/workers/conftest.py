"""The worker-group tests: ``@pytest.mark.soak`` variants are deselected unless ``-m`` names soak or
``CDC_SOAK=1`` (the rule of tests/faults/conftest.py, for this directory when it runs alone).

So are the second PostgreSQL kind's variants (PostgreSQL 15) of every test here not marked
``@pytest.mark.every_pg``: what they check is the worker group's, which the server version does not
change, and each costs tens of seconds of workers. What does depend on the version (row filters,
shard_hash) is checked on every kind by tests/shards and the ``every_pg`` tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from servers.pgbin import KINDS

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CDC_SOAK") == "1" or "soak" in (config.getoption("markexpr", "") or ""):
        return
    dropped = [item for item in items if HERE in item.path.parents and (
        item.get_closest_marker("soak") is not None or (
            item.get_closest_marker("every_pg") is None and _pg_kind(item) in KINDS[1:]))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def _pg_kind(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("pg_server")

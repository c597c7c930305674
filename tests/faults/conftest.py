"""Fault tests: selection rules and shared fixtures.

- ``@pytest.mark.soak`` tests (long variants) are deselected unless ``-m soak``
  (or any -m expression naming soak) or ``CDC_SOAK=1`` is given; pyproject's
  addopts does not deselect them by itself.
- ``@pytest.mark.single_pg`` tests inject faults whose handling does not depend
  on the PostgreSQL version (ClickHouse outages, bursts, credentials): they run
  against the first PostgreSQL kind only, to keep the default suite fast on two
  cores. ``CDC_FAULTS_ALL_PG=1`` runs them against every kind.
"""

from __future__ import annotations

import os

import pytest
from support import Target, checked


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "single_pg: run against the first PostgreSQL kind only (CDC_FAULTS_ALL_PG=1: every kind)"
    )


def _soak_wanted(config: pytest.Config) -> bool:
    return os.environ.get("CDC_SOAK") == "1" or "soak" in (config.getoption("markexpr", "") or "")


def _pg_kind(item: pytest.Item) -> object:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("pg_server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = _soak_wanted(config)
    all_kinds = os.environ.get("CDC_FAULTS_ALL_PG") == "1"
    first_kind = next((kind for item in items if (kind := _pg_kind(item)) is not None), None)
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("soak") is not None and not soak:
            dropped.append(item)
        elif item.get_closest_marker("single_pg") is not None and not all_kinds and _pg_kind(item) not in (
            None, first_kind,
        ):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def migrated(pg_dsn: str, clickhouse_url: str) -> Target:
    """A fresh database with the outbox, its publication and slot, and the ClickHouse tables."""
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    return t

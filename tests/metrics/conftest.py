"""Fixtures of the metrics tests that drive a real `cdc run`."""

from __future__ import annotations

import pytest
from support import Target, checked


@pytest.fixture
def migrated(pg_dsn: str, clickhouse_url: str) -> Target:
    """A fresh database with the outbox, its publication and slot, and the ClickHouse tables."""
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    return t

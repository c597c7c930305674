"""Fixtures for the DBA commands: a migrated database pair, and the CLI run in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from admin_support import Cli, ok
from support import Target


@pytest.fixture
def target(pg_dsn: str, clickhouse_url: str) -> Target:
    return Target(pg_dsn, clickhouse_url)


@pytest.fixture
def run(target: Target) -> Cli:
    return Cli(target)


@pytest.fixture
def migrated(target: Target, run: Cli) -> Iterator[Target]:
    ok(run("migrate"))
    yield target

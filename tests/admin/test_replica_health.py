"""``cdc status`` and ``cdc doctor`` on a replicated sink: replica health and the replication queue.

The sink's tables are made in their cluster form on the real two-replica
18.16 fixture; cdc is pointed at replica 1. Losing replica 2 (kill -9) is a
warning (inserts still succeed), not an outage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from cluster_support import render
from servers.clickhouse_cluster import ClickHouseCluster
from support import Target

from admin_support import Cli

# Nothing listens on port 1: the PostgreSQL half of the report fails fast, the ClickHouse half is what is tested.
NO_PG = "host=127.0.0.1 port=1 dbname=none connect_timeout=2"


@pytest.fixture
def cli(clickhouse_cluster: ClickHouseCluster, cluster_database: str) -> Iterator[Cli]:
    for statement in render(cluster_database, clickhouse_cluster.name)[1:]:
        clickhouse_cluster.execute(statement)
    yield Cli(Target(NO_PG, clickhouse_cluster.url(cluster_database, replica=0)))
    clickhouse_cluster.heal()


def _replica_checks(cli: Cli) -> list[dict[str, str]]:
    checks = json.loads(cli("doctor", "--json", "--timeout", "5").stdout)["checks"]
    return [c for c in checks if c["check"] == "clickhouse replicas"]


def test_healthy_replicas_pass_and_a_killed_one_is_a_warning(cli: Cli, clickhouse_cluster: ClickHouseCluster) -> None:
    healthy = _replica_checks(cli)
    assert len(healthy) == 3 and {c["status"] for c in healthy} == {"PASS"}, healthy
    assert all("2 of 2 active" in c["detail"] for c in healthy), healthy
    status = json.loads(cli("status", "--json").stdout)
    replicas = status["clickhouse"]["replicas"]
    assert {r["table"] for r in replicas} == {"events", "events_dead_letter", "events_cdc_progress"}
    assert all(r["active_replicas"] == 2 and not r["is_readonly"] for r in replicas), replicas

    clickhouse_cluster.kill9(1)
    # ZooKeeper notices the dead replica only when its session expires (10 s here).
    checks: list[dict[str, str]] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        checks = _replica_checks(cli)
        if any(c["status"] == "WARN" for c in checks):
            break
        time.sleep(0.5)
    warned = [c for c in checks if c["status"] == "WARN"]
    assert warned and all("1 of 2 replicas" in c["detail"] for c in warned), checks
    status = json.loads(cli("status", "--json").stdout)
    assert any("1 of 2 replicas of events are active" in p["message"] and p["level"] == "warning"
               for p in status["problems"]), status["problems"]

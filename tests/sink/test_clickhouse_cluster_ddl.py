"""The cluster form of the sink's schema (sql/clickhouse/cluster_*.sql) on a real two-replica 18.16 cluster.

It creates everything on both replicas with ON CLUSTER, rows inserted into
one replica reach the other, and a batch inserted twice byte for byte is
stored once, in the events and (through the materialized view) in the
progress table: what makes a retried insert after a lost answer idempotent.
The same rows stamped with another inserted_at are a different block and
stored twice: a retry must re-send the identical block, not rebuild it.

The modern-ClickHouse variant of the same statements parses in chDB.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from cluster_support import COLUMNS, MODERN, render
from servers.clickhouse_cluster import ClickHouseCluster

def _rows(first: int, count: int, inserted_at: int) -> list[tuple[Any, ...]]:
    at = datetime(2026, 11, 28, 7, 0, tzinfo=timezone.utc)
    return [(f"u{n}", "order.created", at, "prod", '{"n": %d}' % n, 1, n, 1000 + n, 0, at, inserted_at)
            for n in range(first, first + count)]


def _ids(cluster: ClickHouseCluster, table: str, replica: int) -> list[str]:
    cluster.sync_replica(table, replica)
    return [r[0] for r in cluster.execute(f"SELECT unique_id FROM {table} ORDER BY unique_id", replica=replica)]


@pytest.fixture
def schema(clickhouse_cluster: ClickHouseCluster, cluster_database: str) -> str:
    for statement in render(cluster_database, clickhouse_cluster.name)[1:]:
        clickhouse_cluster.execute(statement)
    return cluster_database


def test_on_cluster_ddl_makes_replicated_tables_on_both_replicas(
    clickhouse_cluster: ClickHouseCluster, schema: str
) -> None:
    for replica in (0, 1):
        engines = dict(clickhouse_cluster.execute(
            f"SELECT name, engine FROM system.tables WHERE database = '{schema}'", replica=replica))
        assert engines == {
            "events": "ReplicatedReplacingMergeTree", "events_dead_letter": "ReplicatedReplacingMergeTree",
            "events_cdc_progress": "ReplicatedMergeTree", "events_cdc_progress_mv": "MaterializedView",
            "events_all": "Distributed",
        }, (replica, engines)
    clickhouse_cluster.execute(f"INSERT INTO {schema}.events ({COLUMNS}) VALUES", _rows(1, 5, 1_800_000_000))
    expected = [f"u{n}" for n in range(1, 6)]
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, f"{schema}.events", replica) == expected
        assert _ids(clickhouse_cluster, f"{schema}.events_cdc_progress", replica) == expected
    assert clickhouse_cluster.execute(f"SELECT count() FROM {schema}.events_all", replica=1) == [(5,)]
    # Running the DDL again changes nothing (cdc migrate is idempotent).
    for statement in render(schema, clickhouse_cluster.name)[1:]:
        clickhouse_cluster.execute(statement)


def test_a_batch_inserted_twice_byte_for_byte_is_stored_once_on_both_replicas(
    clickhouse_cluster: ClickHouseCluster, schema: str
) -> None:
    batch = _rows(1, 100, 1_800_000_000)
    clickhouse_cluster.execute(f"INSERT INTO {schema}.events ({COLUMNS}) VALUES", batch, replica=0)
    # The answer was lost; the retry goes to the other replica, with the same block.
    clickhouse_cluster.execute(f"INSERT INTO {schema}.events ({COLUMNS}) VALUES", batch, replica=1)
    expected = sorted(f"u{n}" for n in range(1, 101))
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, f"{schema}.events", replica) == expected
        assert _ids(clickhouse_cluster, f"{schema}.events_cdc_progress", replica) == expected

    # Rebuilt with a new inserted_at, the same rows are another block: the progress table keeps both.
    clickhouse_cluster.execute(f"INSERT INTO {schema}.events ({COLUMNS}) VALUES", _rows(1, 100, 1_800_000_001))
    assert len(_ids(clickhouse_cluster, f"{schema}.events_cdc_progress", 1)) == 200


def test_the_modern_cluster_ddl_parses_in_current_clickhouse() -> None:
    chdb_session = pytest.importorskip("chdb.session")
    session = chdb_session.Session()
    try:
        for statement in render("cdc_db", "cdc_cluster", MODERN):
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
            ast = str(session.query(f"EXPLAIN AST {body}", "TSV"))
            assert "Create" in ast or "CreateQuery" in ast, (statement, ast)
    finally:
        session.close()

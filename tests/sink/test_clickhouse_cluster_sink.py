"""The sink on a replicated cluster (--clickhouse-cluster), on the real two-replica 18.16 fixture.

cdc migrate makes the tables ON CLUSTER; cdc run delivers through a URL naming
both replicas. The replica cdc inserts into is killed after it stored a batch
and before its answer arrived: the retry reaches the other replica and is the
same block byte for byte (one inserted_at per batch, not per attempt), so the
replicas drop it as a repeat and each row is stored once.

ClickHouse 18.16 skips the materialized view for a block it drops as a repeat
(and never deduplicates the view's own blocks), so after a retry the sink sends
the batch's progress rows itself: the progress table may then hold a position
twice, never miss one. The events table is what must hold each row once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from servers.clickhouse_cluster import ClickHouseCluster
from support import Target, checked, insert_events
from test_clickhouse_sink import event_row, make_batch

from cdc.sink.base import SinkError
from cdc.sink.clickhouse import ClickHouseSink

REPLICATED = {
    "events": "ReplicatedReplacingMergeTree", "events_dead_letter": "ReplicatedReplacingMergeTree",
    "events_cdc_progress": "ReplicatedMergeTree", "events_cdc_progress_mv": "MaterializedView",
    "events_all": "Distributed",
}


def _ids(cluster: ClickHouseCluster, database: str, table: str, replica: int) -> list[str]:
    """Every stored row's unique_id as the replica holds it (no FINAL: a duplicate shows)."""
    cluster.sync_replica(f"{database}.{table}", replica)
    rows = cluster.execute(f"SELECT unique_id FROM {database}.{table} WHERE unique_id != '' ORDER BY unique_id",
                           replica=replica)
    return [str(r[0]) for r in rows]


@pytest.fixture
def sink(clickhouse_cluster: ClickHouseCluster, cluster_database: str) -> Iterator[ClickHouseSink]:
    with ClickHouseSink(clickhouse_cluster.multi_host_url(cluster_database), cluster=clickhouse_cluster.name,
                        connect_timeout=2, send_receive_timeout=30) as made:
        made.ensure_schema()
        yield made
    clickhouse_cluster.heal()


def test_ensure_schema_on_a_cluster_makes_replicated_tables_on_every_replica(
    sink: ClickHouseSink, clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    for replica in (0, 1):
        engines = dict(clickhouse_cluster.execute(
            f"SELECT name, engine FROM system.tables WHERE database = '{cluster_database}'", replica=replica))
        assert engines == REPLICATED, (replica, engines)
    sink.ensure_schema()  # again: the tables exist, nothing is sent ON CLUSTER


def test_a_retry_after_the_replica_died_with_the_answer_is_dropped_as_a_repeat(
    sink: ClickHouseSink, clickhouse_cluster: ClickHouseCluster, cluster_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = make_batch(1, [event_row(100, seq) for seq in range(500)])
    conn: Any = sink._conn
    real_insert = conn.insert
    answers_lost = []

    def insert_then_lose_the_answer(query: str, columns: Any) -> None:
        real_insert(query, columns)
        if answers_lost:
            return
        answers_lost.append(query)
        clickhouse_cluster.kill9(0)  # stored on replica 0, which dies before answering
        # Into the next second: a retry stamped anew would differ from the stored block.
        time.sleep(1.0 - time.time() % 1.0 + 0.05)
        raise SinkError("the answer was lost")

    monkeypatch.setattr(conn, "insert", insert_then_lose_the_answer)
    with pytest.raises(SinkError):
        sink.write(batch)
    sink.write(batch)  # as the flusher retries: the same Batch; replica 0 refuses, replica 1 takes it
    # Replica 1 may not have fetched the part before replica 0 died: reading the high-water mark waits
    # for it (SYSTEM SYNC REPLICA), so it is read once replica 0 is back.
    clickhouse_cluster.start(0)
    assert sink.high_water_mark() == (100, 499)
    expected = sorted(f"id-100-{seq}" for seq in range(500))
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, cluster_database, "events", replica) == expected
        # 18.16 skips the view for the dropped repeat; the sink re-sent the positions (a copy is harmless
        # in the progress table, a gap would not be).
        assert set(_ids(clickhouse_cluster, cluster_database, "events_cdc_progress", replica)) == set(expected)


def test_migrate_and_run_on_a_cluster_deliver_every_row_to_both_replicas_once(
    pg_dsn: str, clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    t = Target(pg_dsn, clickhouse_cluster.multi_host_url(cluster_database, first=1))
    on_cluster = {"CDC_CLICKHOUSE_CLUSTER": clickhouse_cluster.name}
    checked(t.cdc("migrate", **on_cluster))
    for replica in (0, 1):
        engines = dict(clickhouse_cluster.execute(
            f"SELECT name, engine FROM system.tables WHERE database = '{cluster_database}'", replica=replica))
        assert engines == REPLICATED, (replica, engines)
    ids = [f"c{n:04d}" for n in range(300)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        insert_events(conn, ids[:200])
    checked(t.cdc("run", "--until-lsn", "current", **on_cluster))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        insert_events(conn, ids[200:])
    # A second run reads the high-water mark back from the cluster and stores only what is new.
    checked(t.cdc("run", "--until-lsn", "current", "--clickhouse-cluster", clickhouse_cluster.name))
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, cluster_database, "events", replica) == ids
        assert _ids(clickhouse_cluster, cluster_database, "events_cdc_progress", replica) == ids


def test_a_sharded_outbox_migrates_onto_a_cluster_and_each_shard_reaches_both_replicas(
    pg_dsn: str, clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    t = Target(pg_dsn, clickhouse_cluster.multi_host_url(cluster_database, first=0))
    on_cluster = {"CDC_CLICKHOUSE_CLUSTER": clickhouse_cluster.name}
    checked(t.cdc("migrate", "--shards", "2", **on_cluster))  # fresh cluster tables: made with the stream column
    ids = [f"s{n:04d}" for n in range(200)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        insert_events(conn, ids)
    checked(t.cdc("run", "--until-lsn", "current", **on_cluster))
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, cluster_database, "events", replica) == ids
        streams = clickhouse_cluster.execute(
            f"SELECT DISTINCT stream FROM {cluster_database}.events_cdc_progress ORDER BY stream", replica=replica)
        assert [s for (s,) in streams] == [100, 101], streams


def test_a_cluster_named_for_tables_that_are_not_replicated_is_refused(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    result = t.cdc("run", "--until-lsn", "current", "--clickhouse-cluster", "somewhere")
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cdc: error: ") and "not replicated" in last and "--clickhouse-cluster" in last, last


@pytest.mark.single_slot("kills one pipeline with a failpoint; tests/workers kill -9 sharded workers")
def test_a_restart_on_a_lagging_replica_waits_for_what_the_other_stored_instead_of_storing_it_again(
    pg_dsn: str, clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    on_cluster = {"CDC_CLICKHOUSE_CLUSTER": clickhouse_cluster.name, "CDC_BATCH_ROWS": "100"}
    via_0 = Target(pg_dsn, clickhouse_cluster.multi_host_url(cluster_database, first=0))
    via_1 = Target(pg_dsn, clickhouse_cluster.multi_host_url(cluster_database, first=1))
    checked(via_0.cdc("migrate", **on_cluster))
    ids = [f"l{n:04d}" for n in range(300)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        insert_events(conn, ids)
    # Replica 1 stops fetching: what replica 0 stores stays there for now.
    for table in ("events", "events_cdc_progress"):
        clickhouse_cluster.execute(f"SYSTEM STOP FETCHES {cluster_database}.{table}", replica=1)
    # Stored on replica 0, never acknowledged: PostgreSQL sends those rows again to the next run.
    killed = via_0.cdc("run", "--until-lsn", "current", CDC_FAILPOINTS="after_insert=2", **on_cluster)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stored = len(_ids(clickhouse_cluster, cluster_database, "events_cdc_progress", 0))
    assert stored == 200, stored

    def resume_fetches() -> None:
        for table in ("events", "events_cdc_progress"):
            clickhouse_cluster.execute(f"SYSTEM START FETCHES {cluster_database}.{table}", replica=1)

    timer = threading.Timer(3.0, resume_fetches)
    timer.start()
    try:
        # Through replica 1: its high-water mark and dedup window are read once it holds replica 0's parts.
        checked(via_1.cdc("run", "--until-lsn", "current", **on_cluster))
    finally:
        timer.join()
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, cluster_database, "events", replica) == ids
        assert _ids(clickhouse_cluster, cluster_database, "events_cdc_progress", replica) == ids

"""A replicated ClickHouse sink under load loses a server: a replica (kill -9), or ZooKeeper.

cdc runs with --clickhouse-cluster and a URL naming both replicas of the
real 18.16 fixture, while a writer commits (and rolls back) outbox
transactions. Each case ends with exactly the committed set on both replicas,
read without FINAL so that a duplicate shows.

- The replica cdc inserts into is killed: the insert in flight fails, the
  retry reaches the other replica (alt_hosts) with the same block, and the
  replicas drop it if the dead one had stored it.
- ZooKeeper stops: every replicated table turns read-only, inserts fail, cdc
  retries and acknowledges nothing it has not stored; when ZooKeeper is back
  it catches up by itself.
"""

from __future__ import annotations

import time

import pytest
from fault_support import AckWatch, CdcProcess, Writer, catch_up
from servers.clickhouse_cluster import ClickHouseCluster
from support import Target, acknowledged_before_stored, checked, stored_positions, wait_until

TUNING = (
    "--dedup-window", "0", "--retry-initial", "0.1", "--retry-max", "1", "--batch-rows", "500",
    "--flush-interval", "0.2", "--status-interval", "0.5",
)

pytestmark = pytest.mark.single_pg


def _ids(cluster: ClickHouseCluster, database: str, table: str, replica: int) -> list[str]:
    cluster.sync_replica(f"{database}.{table}", replica)
    rows = cluster.execute(f"SELECT unique_id FROM {database}.{table} WHERE unique_id != '' ORDER BY unique_id",
                           replica=replica)
    return [str(r[0]) for r in rows]


def _assert_exactly_on_both(cluster: ClickHouseCluster, database: str, committed: list[str]) -> None:
    """Every committed row once in the events of each replica; each also in the progress table, which may
    hold a retried batch's positions twice (the sink re-sends them after a retry: a copy is harmless there,
    a gap would let the high-water mark fall behind)."""
    expected = sorted(committed)
    for replica in (0, 1):
        got = _ids(cluster, database, "events", replica)
        assert got == expected, (
            f"replica {replica}: {len(got)} events for {len(expected)} committed, "
            f"{len(got) - len(set(got))} duplicated, {len(set(expected) - set(got))} missing"
        )
        progress = set(_ids(cluster, database, "events_cdc_progress", replica))
        assert progress == set(expected), (replica, len(set(expected) - progress), len(progress - set(expected)))


def _flushes(run: CdcProcess) -> int:
    return len(run.events("flushed"))


def _start(pg_dsn: str, cluster: ClickHouseCluster, database: str, seed: str) -> tuple[Target, Writer, CdcProcess]:
    t = Target(pg_dsn, cluster.multi_host_url(database, first=0))
    checked(t.cdc("migrate", "--clickhouse-cluster", cluster.name))
    writer = Writer(t, seed[:1], seed=seed, max_rows=20, rollback_every=5)
    run = CdcProcess(t, "run", "--clickhouse-cluster", cluster.name, *TUNING)
    writer.start()
    run.wait_for("flushed")
    return t, writer, run


def test_kill9_of_the_replica_cdc_inserts_into_loses_nothing_and_stores_nothing_twice(
    pg_dsn: str, clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    t, writer, run = _start(pg_dsn, clickhouse_cluster, cluster_database, "ch-replica-kill9")
    try:
        time.sleep(1.0)
        clickhouse_cluster.kill9(0)
        # Batches go on being stored: by replica 1 now.
        run.wait_for("flushed", timeout=60, count=_flushes(run) + 5)
    finally:
        writer.stop()
    catch_up(t)
    assert run.stop() == 0, run.tail()
    clickhouse_cluster.start(0)
    _assert_exactly_on_both(clickhouse_cluster, cluster_database, writer.committed)


def test_zookeeper_outage_holds_acknowledgements_back_and_cdc_catches_up_after(
    pg_dsn: str, clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    t, writer, run = _start(pg_dsn, clickhouse_cluster, cluster_database, "zookeeper-outage")
    # Replica 0 is where cdc inserts, and it stays up: its high-water mark is what it stored.
    watch = AckWatch(Target(pg_dsn, clickhouse_cluster.url(cluster_database, replica=0)))
    watch.start()
    try:
        time.sleep(1.0)
        clickhouse_cluster.zookeeper.stop()
        run.wait_for("insert failed, will retry", timeout=60)

        def readonly() -> bool:
            rows = clickhouse_cluster.execute(
                "SELECT is_readonly OR is_session_expired FROM system.replicas "
                f"WHERE database = '{cluster_database}' AND table = 'events'")
            return rows == [(1,)]

        wait_until(readonly, 60, "replica 0's events table to turn read-only")
        time.sleep(5)
        clickhouse_cluster.heal()
        run.wait_for("flushed", timeout=120, count=_flushes(run) + 3)
    finally:
        writer.stop()
    catch_up(t, timeout=180)
    samples = watch.stop()
    assert run.stop() == 0, run.tail()
    final = stored_positions(Target(pg_dsn, clickhouse_cluster.url(cluster_database, replica=0)))
    assert not acknowledged_before_stored(final, samples)
    _assert_exactly_on_both(clickhouse_cluster, cluster_database, writer.committed)

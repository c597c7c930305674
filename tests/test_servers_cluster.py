"""The ZooKeeper and replicated ClickHouse cluster fixtures behave like a real cluster."""

from __future__ import annotations

import pytest
from clickhouse_driver import errors as ch_errors
from servers.clickhouse_cluster import ClickHouseCluster
from servers.fixtures import unavailable
from servers.zookeeper import ZooKeeperServer, four_letter


def _make_events(cluster: ClickHouseCluster, database: str) -> None:
    cluster.execute(
        f"CREATE TABLE {database}.events ON CLUSTER {cluster.name} (id UInt64, body String)"
        f" ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/events', '{{replica}}')"
        " ORDER BY id"
    )


def _ids(cluster: ClickHouseCluster, database: str, replica: int) -> list[int]:
    cluster.sync_replica(f"{database}.events", replica)
    return [row[0] for row in cluster.execute(f"SELECT id FROM {database}.events ORDER BY id", replica=replica)]


def test_a_missing_server_package_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="zookeeper"):
        unavailable("apt-get install zookeeper")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="zookeeper"):
        unavailable("apt-get install zookeeper")


def test_zookeeper_serves_standalone_on_loopback(zookeeper: ZooKeeperServer) -> None:
    assert four_letter(zookeeper.port, "ruok") == "imok"
    assert "Mode: standalone" in zookeeper.stat("srvr")
    assert zookeeper.address == f"127.0.0.1:{zookeeper.port}"


def test_cluster_has_two_replicas_of_one_shard_with_their_macros(clickhouse_cluster: ClickHouseCluster) -> None:
    rows = clickhouse_cluster.execute(
        "SELECT shard_num, replica_num, host_address, port FROM system.clusters"
        " WHERE cluster = %(c)s ORDER BY replica_num",
        {"c": clickhouse_cluster.name},
    )
    assert rows == [(1, i + 1, host, port) for i, (host, port) in enumerate(clickhouse_cluster.hosts())]
    for index, replica in enumerate(clickhouse_cluster.replicas):
        macros = dict(clickhouse_cluster.execute("SELECT macro, substitution FROM system.macros", replica=index))
        assert macros == {"shard": "01", "replica": replica.replica}
    second = clickhouse_cluster.replica(1)
    assert clickhouse_cluster.url("db", replica=1) == f"clickhouse://default@127.0.0.1:{second.port}/db"


def test_settings_given_by_set_reach_the_server_intact(clickhouse_cluster: ClickHouseCluster) -> None:
    # Passed as driver settings instead, this one arrives as -2 on 18.16.
    query = "SELECT value FROM system.settings WHERE name = 'distributed_ddl_task_timeout'"
    assert clickhouse_cluster.execute(query, session_settings={"distributed_ddl_task_timeout": 3}) == [("3",)]


def test_table_made_on_cluster_replicates_inserts_and_reads_through_distributed(
    clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    db = cluster_database
    _make_events(clickhouse_cluster, db)
    clickhouse_cluster.execute(
        f"CREATE TABLE {db}.events_all ON CLUSTER {clickhouse_cluster.name} AS {db}.events"
        f" ENGINE = Distributed({clickhouse_cluster.name}, {db}, events, rand())"
    )
    clickhouse_cluster.execute(f"INSERT INTO {db}.events (id, body) VALUES", [(i, f"e{i}") for i in range(100)])
    assert _ids(clickhouse_cluster, db, replica=1) == list(range(100))
    # One shard, internal replication: the Distributed table reads one replica, not both.
    for replica in (0, 1):
        assert clickhouse_cluster.execute(f"SELECT count() FROM {db}.events_all", replica=replica) == [(100,)]


def test_identical_block_inserted_twice_is_stored_once(
    clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    # What a retried batch relies on: Replicated tables drop a repeated block.
    _make_events(clickhouse_cluster, cluster_database)
    block = [(i, "same") for i in range(10)]
    clickhouse_cluster.execute(f"INSERT INTO {cluster_database}.events (id, body) VALUES", block, replica=0)
    clickhouse_cluster.execute(f"INSERT INTO {cluster_database}.events (id, body) VALUES", block, replica=1)
    assert _ids(clickhouse_cluster, cluster_database, replica=0) == list(range(10))


def test_replica_killed_outright_comes_back_on_its_ports_and_catches_up(
    clickhouse_cluster: ClickHouseCluster, cluster_database: str
) -> None:
    db = cluster_database
    _make_events(clickhouse_cluster, db)
    victim = clickhouse_cluster.replica(1)
    ports = (victim.port, victim.http_port)
    clickhouse_cluster.kill9(1)
    assert not victim.running
    clickhouse_cluster.execute(f"INSERT INTO {db}.events (id, body) VALUES", [(i, "while down") for i in range(50)])
    clickhouse_cluster.start(1)
    assert (victim.port, victim.http_port) == ports
    assert _ids(clickhouse_cluster, db, replica=1) == list(range(50))


def test_zookeeper_outage_fails_replicated_inserts_until_it_is_back(
    clickhouse_cluster: ClickHouseCluster, zookeeper: ZooKeeperServer, cluster_database: str
) -> None:
    db = cluster_database
    _make_events(clickhouse_cluster, db)
    clickhouse_cluster.execute(f"INSERT INTO {db}.events (id, body) VALUES", [(1, "before")])
    port = zookeeper.port
    zookeeper.stop()
    try:
        with pytest.raises(ch_errors.ServerException):
            clickhouse_cluster.execute(f"INSERT INTO {db}.events (id, body) VALUES", [(2, "during")])
    finally:
        zookeeper.start()
    assert zookeeper.port == port
    # The table stays read-only until it has its ZooKeeper session back,
    # which heal() waits for.
    clickhouse_cluster.heal()
    clickhouse_cluster.execute(f"INSERT INTO {db}.events (id, body) VALUES", [(3, "after")])
    for replica in (0, 1):
        assert _ids(clickhouse_cluster, db, replica) == [1, 3]

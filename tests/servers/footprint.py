"""What each HA/monitoring fixture costs: start-up seconds and resident memory.

    cd tests && ../.venv/bin/python -m servers.footprint

Starts each server the way the fixtures do, one after the other, prints one
line per fixture (wall seconds to ready, RSS of its process trees after a
little work) and tears everything down. Figures for reports, not for tests:
on a shared 2-core machine they move with the load, which is printed too.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil  # type: ignore[import-untyped,unused-ignore]

from . import make_server_root
from .clickhouse_cluster import start_cluster
from .pg_standby import make_template, start_standby_pair, tmpfs_if_roomy
from .prometheus import start_prometheus
from .zookeeper import start_zookeeper

T = TypeVar("T")


def _timed(start: Callable[[], T]) -> tuple[T, float]:
    began = time.monotonic()
    value = start()
    return value, time.monotonic() - began


def _rss_mib(pids: Iterable[int | None]) -> float:
    total = 0
    for pid in pids:
        if pid is None:
            continue
        try:
            root = psutil.Process(pid)
            total += sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            continue
    return total / 2**20


def main() -> None:
    root = make_server_root()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        zookeeper, zk_s = _timed(lambda: start_zookeeper(root / "zookeeper"))
        print(f"zookeeper           start {zk_s:5.2f} s   rss {_rss_mib([zookeeper.pid]):6.0f} MiB")
        cluster, ch_s = _timed(lambda: start_cluster(zookeeper, root / "cluster"))
        cluster.execute(f"CREATE DATABASE fp ON CLUSTER {cluster.name}")
        cluster.execute(
            f"CREATE TABLE fp.e ON CLUSTER {cluster.name} (id UInt64) ENGINE = "
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/fp/e', '{replica}') ORDER BY id"
        )
        cluster.execute("INSERT INTO fp.e VALUES", [(i,) for i in range(10000)])
        cluster.sync_replica("fp.e", 1)
        replicas = _rss_mib(r.pid for r in cluster.replicas)
        everything = _rss_mib([zookeeper.pid, *(r.pid for r in cluster.replicas)])
        print(f"clickhouse_cluster  start {ch_s:5.2f} s   rss {replicas:6.0f} MiB (two replicas; "
              f"{zk_s + ch_s:.2f} s and {everything:.0f} MiB with ZooKeeper)")
        cluster.destroy()
        zookeeper.destroy()

        tmpfs = tmpfs_if_roomy()
        for pairs_root in [root] + ([make_server_root(tmpfs)] if tmpfs is not None else []):
            template, tpl_s = _timed(lambda: make_template(pairs_root / "template"))
            for workdir in (pairs_root / "pair1", pairs_root / "pair2"):
                pair, pair_s = _timed(lambda: start_standby_pair(workdir, template))
                rss = _rss_mib([pair.primary.pid, pair.standby.pid])
                print(f"pg_standby          start {pair_s:5.2f} s   rss {rss:6.0f} MiB (per test, under "
                      f"{pairs_root.parent}; session template initdb {tpl_s:.2f} s)")
                pair.destroy()
            if pairs_root != root:
                shutil.rmtree(pairs_root, ignore_errors=True)

        prometheus, prom_s = _timed(lambda: start_prometheus(root / "prometheus"))
        print(f"prometheus_server   start {prom_s:5.2f} s   rss {_rss_mib([prometheus.pid]):6.0f} MiB")
        prometheus.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Drain rate into a two-replica ClickHouse cluster against a single server, side by side.

    python -m bench.cluster --events 1000000          # ~3 min on 2 idle cores
    python -m bench.cluster --events 20000 --json out.json

One PostgreSQL (bench.env.Servers), one standalone ClickHouse, and the test
suite's cluster (ZooKeeper + two 18.16 replicas, tests/servers). The same
backlog is loaded into two databases; `cdc run --until-lsn current` drains one
into the single server (tables made by `cdc migrate`) and the other into
replica 1 of the cluster (tables made from sql/clickhouse/cluster_*.sql:
Replicated*MergeTree ON CLUSTER). The cluster run counts as done when cdc has
exited and replica 2 holds every row too (SYSTEM SYNC REPLICA), so
replication is inside the measured time. Each run is timed from process start
to exit; the rates' ratio is the cost of replication (ZooKeeper round trips
per inserted block, and replica 2 fetching the parts on the same machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import workload
from .env import CDC, BenchError, Child, Servers, Target, checked, connect, settle

from servers.clickhouse_cluster import ClickHouseCluster, start_cluster
from servers.zookeeper import start_zookeeper


def _load(t: Target, events: int, txn_rows: int) -> None:
    with connect(t.pg_dsn) as conn:
        workload.load_backlog(conn, events, txn_rows=txn_rows)
        settle(conn, "outbox")


def _drain(name: str, t: Target, srv: Servers, done: Any, **env: str) -> dict[str, Any]:
    started = time.monotonic()
    # Slots are per server, not per database: one per run.
    child = Child([*CDC, "run", "--until-lsn", "current"], env=t.env(CDC_SLOT=f"cdc_{name}", **env),
                  log=srv.logs / f"{name}.log", cwd=srv.root)
    result = child.wait(timeout=600).check()
    done()
    seconds = time.monotonic() - started
    return {"seconds": seconds, "cdc_seconds": result.seconds, "cpu_s": result.cpu_s}


def _count(execute: Any, database: str) -> int:
    return int(execute(f"SELECT count() FROM {database}.events_cdc_progress WHERE unique_id != ''")[0][0])


def run(events: int, txn_rows: int) -> dict[str, Any]:
    srv = Servers("pg18")
    zookeeper = cluster = None
    try:
        zookeeper = start_zookeeper(srv.root / "zookeeper")
        cluster = start_cluster(zookeeper, srv.root / "cluster")
        results: dict[str, Any] = {"events": events, "loadavg_1min_before": os.getloadavg()[0]}

        single = srv.database("bench_single")
        checked(subprocess.run([*CDC, "migrate"], env=single.env(CDC_SLOT="cdc_single"),
                               capture_output=True, text=True, timeout=300))
        _load(single, events, txn_rows)
        results["single"] = _drain("single", single, srv, lambda: None)
        results["single"]["stored"] = _count(srv.clickhouse.execute, "bench_single")

        results["cluster"] = _drain_cluster(srv, cluster, events, txn_rows)
        for key in ("single", "cluster"):
            if results[key]["stored"] != events:
                raise BenchError(f"{key}: {results[key]['stored']} events stored, expected {events}")
            results[key]["events_per_s"] = events / results[key]["seconds"]
        results["cluster_vs_single"] = results["cluster"]["events_per_s"] / results["single"]["events_per_s"]
        results["loadavg_1min_after"] = os.getloadavg()[0]
        return results
    finally:
        if cluster is not None:
            cluster.destroy()
        if zookeeper is not None:
            zookeeper.destroy()
        srv.close()


def _drain_cluster(srv: Servers, cluster: ClickHouseCluster, events: int, txn_rows: int) -> dict[str, Any]:
    database = "bench_cluster"
    pg_only = srv.database(database)  # a fresh PostgreSQL database; its ClickHouse URL is replaced below
    # Both replicas in the URL (replica 1 first): `cdc migrate` makes the tables ON CLUSTER.
    t = Target(pg_only.pg_dsn, cluster.multi_host_url(database))
    on_cluster = {"CDC_CLICKHOUSE_CLUSTER": cluster.name}
    checked(subprocess.run([*CDC, "migrate"], env=t.env(CDC_SLOT="cdc_cluster", **on_cluster),
                           capture_output=True, text=True, timeout=300))
    _load(t, events, txn_rows)

    def replicated() -> None:
        for table in ("events", "events_cdc_progress"):
            cluster.sync_replica(f"{database}.{table}", 1)

    result = _drain("cluster", t, srv, replicated, **on_cluster)
    result["stored"] = _count(lambda q: cluster.execute(q, replica=1), database)
    result["stored_replica_1"] = _count(lambda q: cluster.execute(q, replica=0), database)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--txn-rows", type=int, default=50_000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.events, min(args.txn_rows, args.events))
    for key in ("single", "cluster"):
        r = results[key]
        print(f"{key:<8} {r['events_per_s']:>10,.0f} events/s  ({r['seconds']:.1f} s, cdc cpu {r['cpu_s']:.1f} s)")
    print(f"cluster/single {results['cluster_vs_single']:.2f}  (load {results['loadavg_1min_before']:.1f} -> "
          f"{results['loadavg_1min_after']:.1f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

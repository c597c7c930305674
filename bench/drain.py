"""1. drain: a backlog of N committed events, for the pipeline, the limit (pg_recvlogical) and the relay."""

from __future__ import annotations

import argparse
import os
from typing import Any

from cdc.pg.preflight import protocol_version

from . import relay
from .common import SLOT, LIMIT_SLOTS, MB, log, migrate, relay_schema, load, pipeline_drain
from .env import (
    PYTHON_M, ROOT, BenchError, Child, CpuMeter, Servers, autovacuums, clickhouse_events, clickhouse_rows, connect,
    delta, format_lsn, settle, wal_lsn,
)


def scenario_drain(srv: Servers, args: argparse.Namespace) -> dict[str, Any]:
    n = args.events
    db, relay_db = "bench_drain", "bench_relay"
    t = srv.database(db, args.clickhouse_params)
    migrate(srv, t)
    with connect(t.pg_dsn) as conn:
        for slot in LIMIT_SLOTS:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        server_version = conn.info.server_version
    startup = pipeline_drain(srv, args, t, db, expect_rows=0, name="drain-empty")
    log(f"cdc run on an empty backlog: {startup['seconds']:.2f} s, {startup['cpu_s']:.2f} s CPU")
    backlog = load(t, n, args.txn_rows)
    with connect(t.pg_dsn) as conn:
        end = wal_lsn(conn)

    # (b) the limit: the same server's own client, streaming the same backlog to /dev/null. Run once
    # before and once after the pipeline (the first reader of fresh WAL can pay more); the faster counts.
    proto = protocol_version(server_version)

    def recvlogical(slot: str) -> dict[str, Any]:
        argv = [
            str(srv.postgres.bin_dir / "pg_recvlogical"), "-d", t.pg_dsn, "--slot", slot, "--start",
            "--endpos", format_lsn(end), "-o", f"proto_version={proto}", "-o", f"publication_names={SLOT}",
            "-f", "/dev/null", "--no-loop",
        ]
        with CpuMeter(srv.cpu_groups()) as meter:
            run = Child(argv, env=srv.pg_env(), log=srv.logs / f"{slot}.log").wait(timeout=120 + n / 2000).check()
        with connect(t.pg_dsn) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        log(f"pg_recvlogical ({slot}): {n / run.seconds:,.0f} events/s")
        return {"slot": slot, "seconds": run.seconds, "events_per_s": n / run.seconds, "cpu_s": run.cpu_s,
                "proto_version": proto, "cpu_elsewhere": meter.as_dict()}

    limit_before = recvlogical(LIMIT_SLOTS[0])

    # (a) the pipeline
    pipeline = pipeline_drain(srv, args, t, db, expect_rows=n, name="drain-pipeline")
    pipeline["startup_seconds"] = startup["seconds"]
    pipeline["startup_cpu_s"] = startup["cpu_s"]
    pipeline["net_cpu_us_per_event"] = (pipeline["cpu_s"] - startup["cpu_s"]) / max(n, 1) * 1e6
    log(f"pipeline: {pipeline['events_per_s']:,.0f} events/s, peak RSS {pipeline['peak_rss_mb']:.0f} MB")
    limit_after = recvlogical(LIMIT_SLOTS[1])
    limit = dict(max(limit_before, limit_after, key=lambda r: r["events_per_s"]))
    limit["runs"] = [limit_before, limit_after]

    # (c) the polling relay, on its own copy of the rows
    with connect(t.pg_dsn) as conn:
        relay.prepare(conn)
        settle(conn, "outbox_relay")
    relay_schema(srv, srv.clickhouse.url(relay_db))
    with connect(t.pg_dsn) as conn:
        wal_before = wal_lsn(conn)
        vacuums_before = autovacuums(conn, "outbox_relay")
    ch_before = clickhouse_events(srv)
    relay_argv = [*PYTHON_M, "bench.relay", "--dsn", t.pg_dsn, "--clickhouse-url", srv.clickhouse.url(relay_db),
                  "--batch", str(args.relay_batch)]
    with CpuMeter(srv.cpu_groups()) as relay_meter:
        relay_run = Child(relay_argv, env=dict(os.environ), cwd=ROOT, log=srv.logs / "relay.log").wait(
            timeout=180 + n / 500).check()
    with connect(t.pg_dsn) as conn:
        wal_after = wal_lsn(conn)
        left = conn.execute("SELECT count(*) FROM outbox_relay WHERE processed_at IS NULL").fetchone()[0]  # type: ignore[index]
        vacuums = autovacuums(conn, "outbox_relay") - vacuums_before
    ch_counts = delta(clickhouse_events(srv), ch_before)
    stored = clickhouse_rows(srv, relay_db)
    if stored != n or left:
        raise BenchError(f"relay: ClickHouse holds {stored} events of {n}, {left} rows left unprocessed")
    relay_result = {
        "seconds": relay_run.seconds, "events_per_s": n / relay_run.seconds, "batch": args.relay_batch,
        "cpu_s": relay_run.cpu_s, "cpu_us_per_event": relay_run.cpu_s / max(n, 1) * 1e6,
        "peak_rss_mb": relay_run.maxrss_bytes / MB, "wal_bytes": wal_after - wal_before,
        "wal_bytes_per_event": (wal_after - wal_before) / max(n, 1), "cpu_elsewhere": relay_meter.as_dict(),
        # Why the relay's rate varies from run to run: ClickHouse delaying its small inserts, autovacuum.
        "clickhouse_events": ch_counts, "autovacuum_runs": vacuums,
    }
    log(f"relay: {relay_result['events_per_s']:,.0f} events/s")
    srv.drop(db)
    srv.drop(relay_db)
    return {
        "events": n, "backlog": backlog, "pipeline": pipeline, "limit": limit, "relay": relay_result,
        "ratios": {
            "pipeline_vs_limit": pipeline["events_per_s"] / limit["events_per_s"],
            "pipeline_vs_relay": pipeline["events_per_s"] / relay_result["events_per_s"],
        },
    }

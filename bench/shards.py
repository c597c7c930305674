"""The sharding benchmark: what N slots cost PostgreSQL, and what they buy.

    python -m bench.shards                       # everything, 1M events (long: tens of minutes on 2 cores)
    python -m bench.shards --quick               # 50k events
    python -m bench.shards --only walsender --json out.json

Scenarios (bench/README.md says more):

walsender  For 1, 2 and 4 shards: the backlog read by pg_recvlogical from every
           slot, one slot at a time, each to its end: the PostgreSQL CPU (the
           walsender) per slot, per event it decoded (every slot decodes all the
           WAL) and per event it sent (its shard). With one slot, also in
           pgoutput's binary format.
drain      The same backlog drained into ClickHouse by ``cdc run --until-lsn`` with
           1, 2 and 4 shards and 1 and 2 worker processes (all started at once,
           timed until the last exits), shards in child processes, and in threads
           for comparison; the PostgreSQL CPU meanwhile, per event per shard.
           Beside it, in the same run: pg_recvlogical on the single slot (the
           limit) and the polling relay writing to a plain events table of its
           own (bench/relay.py, no progress view).
takeover   Two workers on 4 shards under a steady writer; one is killed (kill -9)
           ``--kills`` times: the seconds from the kill to the first row stored by
           the new owner of one of its shards (its "flushed" log line), p50 and max.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/shards.py`: run as the bench.shards module instead
    import runpy

    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    runpy.run_module("bench.shards", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

from cdc.pg.preflight import protocol_version

from . import relay, workload
from .env import (
    CDC, PYTHON_M, ROOT, BenchError, Child, CpuMeter, Servers, Target, checked, clickhouse_rows, connect, format_lsn,
    settle, wal_lsn,
)

FULL = {"events": 1_000_000, "txn_rows": 50_000}
QUICK = {"events": 50_000, "txn_rows": 10_000}


def log(message: str) -> None:
    print(f"[shards {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def migrate(t: Target, shards: int) -> None:
    import subprocess

    checked(subprocess.run([*CDC, "migrate", "--shards", str(shards)], env=t.env(), capture_output=True, text=True,
                           timeout=300))



def slots_of(shards: int) -> list[str]:
    return ["cdc_outbox"] if shards == 1 else [f"cdc_outbox_{k}" for k in range(shards)]


def recvlogical(
    srv: Servers, t: Target, slot: str, end: int, *, publication: str | None = None, binary: bool = False,
) -> dict[str, Any]:
    """Read the slot to ``end`` with PostgreSQL's own client, to /dev/null; the servers' CPU meanwhile."""
    with connect(t.pg_dsn) as conn:
        proto = protocol_version(conn.info.server_version)
    argv = [
        str(srv.postgres.bin_dir / "pg_recvlogical"), "-d", t.pg_dsn, "--slot", slot, "--start",
        "--endpos", format_lsn(end), "-o", f"proto_version={proto}", "-o", f"publication_names={publication or slot}",
        "-f", "/dev/null", "--no-loop",
    ]
    if binary:
        argv += ["-o", "binary=true"]
    with CpuMeter(srv.cpu_groups()) as meter:
        run = Child(argv, env=srv.pg_env(), log=srv.logs / f"recvlogical-{slot}.log").wait(timeout=1800).check()
    return {"slot": slot, "binary": binary, "seconds": run.seconds, "client_cpu_s": run.cpu_s,
            "postgres_cpu_s": meter.groups_cpu_s.get("postgres", 0.0), "foreign_cores": meter.foreign_cores}


def scenario_walsender(srv: Servers, args: argparse.Namespace) -> dict[str, Any]:
    n = args.events
    out: dict[str, Any] = {"events": n, "runs": []}
    for shards in (1, 2, 4):
        t = srv.database("bench_walsender", "")
        migrate(t, shards)
        with connect(t.pg_dsn) as conn:
            if shards == 1:
                # The same publication through a second slot, read in binary.
                conn.execute("SELECT pg_create_logical_replication_slot('bench_binary', 'pgoutput')")
            workload.load_backlog(conn, n, txn_rows=args.txn_rows)
            settle(conn, "outbox")
            end = wal_lsn(conn)
            sizes = ([n] if shards == 1 else [int(conn.execute(
                "SELECT count(*) FROM outbox WHERE shard_hash %% %s = %s", (shards, k)).fetchone()[0])  # type: ignore[index]
                for k in range(shards)])
        for slot, sent in zip(slots_of(shards), sizes):
            run = recvlogical(srv, t, slot, end)
            run.update(shards=shards, events_sent=sent, decoded_events=n,
                       us_per_decoded_event=run["postgres_cpu_s"] / n * 1e6,
                       us_per_sent_event=run["postgres_cpu_s"] / max(sent, 1) * 1e6)
            out["runs"].append(run)
            log(f"{shards} shard(s), {slot}: {run['postgres_cpu_s']:.2f} s PostgreSQL CPU, "
                f"{run['us_per_decoded_event']:.2f} us/decoded event, {sent / run['seconds']:,.0f} sent/s")
        if shards == 1:
            run = recvlogical(srv, t, "bench_binary", end, publication="cdc_outbox", binary=True)
            out["runs"].append(dict(run, shards=1, events_sent=n, decoded_events=n,
                                    us_per_decoded_event=run["postgres_cpu_s"] / n * 1e6,
                                    us_per_sent_event=run["postgres_cpu_s"] / n * 1e6))
            log(f"1 shard, binary: {run['postgres_cpu_s']:.2f} s PostgreSQL CPU")
        srv.drop("bench_walsender")
    return out


def _drain_once(srv: Servers, args: argparse.Namespace, shards: int, workers: int, *, threads: bool,
                with_baselines: bool = False) -> dict[str, Any]:
    n = args.events
    t = srv.database("bench_shards", args.clickhouse_params)
    migrate(t, shards)
    if with_baselines:
        with connect(t.pg_dsn) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot('bench_limit', 'pgoutput')")
    with connect(t.pg_dsn) as conn:
        workload.load_backlog(conn, n, txn_rows=args.txn_rows)
        settle(conn, "outbox")
        end = wal_lsn(conn)
    argv = [*CDC, "run", "--until-lsn", format_lsn(end), *(["--shard-threads"] if threads else []),
            *shlex.split(args.cdc_args)]
    name = f"drain-{shards}x{workers}{'-threads' if threads else ''}"
    with CpuMeter(srv.cpu_groups()) as meter:
        started = time.monotonic()
        children = [Child(argv, env=t.env(), log=srv.logs / f"{name}-{w}.log") for w in range(workers)]
        runs = [child.wait(timeout=600 + n / 500).check() for child in children]
        wall = time.monotonic() - started
    stored = clickhouse_rows(srv, "bench_shards")
    if stored != n:
        raise BenchError(f"{name}: ClickHouse holds {stored} events, not {n}")
    postgres_cpu = meter.groups_cpu_s.get("postgres", 0.0)
    result: dict[str, Any] = {
        "shards": shards, "workers": workers, "threads": threads, "events": n, "seconds": wall,
        "events_per_s": n / wall, "cdc_cpu_s": sum(r.cpu_s for r in runs),
        "cdc_cpu_us_per_event": sum(r.cpu_s for r in runs) / n * 1e6,
        "postgres_cpu_s": postgres_cpu, "postgres_cpu_us_per_event": postgres_cpu / n * 1e6,
        "walsender_cpu_us_per_event_per_shard": postgres_cpu / n / shards * 1e6,
        "clickhouse_cpu_s": meter.groups_cpu_s.get("clickhouse", 0.0), "cpu_elsewhere": meter.as_dict(),
    }
    log(f"{name}: {result['events_per_s']:,.0f} events/s, PostgreSQL {result['postgres_cpu_us_per_event']:.1f} "
        f"us/event, cdc {result['cdc_cpu_us_per_event']:.1f} us/event (foreign {meter.foreign_cores:.2f} cores)")
    if with_baselines:
        result["limit"] = recvlogical(srv, t, "bench_limit", end, publication="cdc_outbox")
        result["limit"]["events_per_s"] = n / result["limit"]["seconds"]
        result["relay"] = _relay_plain(srv, t, n, args.relay_batch)
        log(f"limit {result['limit']['events_per_s']:,.0f} events/s, relay {result['relay']['events_per_s']:,.0f}")
    srv.drop("bench_shards")
    return result


_PLAIN_EVENTS = """CREATE TABLE {db}.events (unique_id String, event_type String, occurred_at DateTime('UTC'),
    environment String, payload String, metadata_version Int32, outbox_id Int64, commit_lsn UInt64, commit_seq UInt32,
    committed_at DateTime('UTC'), inserted_at DateTime('UTC'))
    ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY (event_type, occurred_at, unique_id)"""


def _relay_plain(srv: Servers, t: Target, n: int, batch: int) -> dict[str, Any]:
    """The polling relay on its own copy of the rows, into a plain events table (no progress view)."""
    db = "bench_relay_plain"
    srv.clickhouse.execute(f"DROP DATABASE IF EXISTS {db}")
    srv.clickhouse.execute(f"CREATE DATABASE {db}")
    srv.clickhouse.execute(_PLAIN_EVENTS.format(db=db))
    with connect(t.pg_dsn) as conn:
        relay.prepare(conn)
        settle(conn, "outbox_relay")
    argv = [*PYTHON_M, "bench.relay", "--dsn", t.pg_dsn, "--clickhouse-url", srv.clickhouse.url(db),
            "--batch", str(batch)]
    with CpuMeter(srv.cpu_groups()) as meter:
        run = Child(argv, env=dict(os.environ), cwd=ROOT, log=srv.logs / "relay-plain.log").wait(
            timeout=600 + n / 300).check()
    stored = clickhouse_rows(srv, db, "events")
    srv.clickhouse.execute(f"DROP DATABASE IF EXISTS {db}")
    if stored != n:
        raise BenchError(f"relay: ClickHouse holds {stored} events of {n}")
    return {"seconds": run.seconds, "events_per_s": n / run.seconds, "cpu_s": run.cpu_s, "batch": batch,
            "cpu_elsewhere": meter.as_dict()}


def scenario_drain(srv: Servers, args: argparse.Namespace) -> dict[str, Any]:
    runs = [_drain_once(srv, args, 1, 1, threads=False, with_baselines=True)]
    for layout in args.layouts.split(","):
        shards, workers = (int(part) for part in layout.rstrip("t").split("x"))
        runs.append(_drain_once(srv, args, shards, workers, threads=layout.endswith("t")))
    limit, relay_rate = runs[0]["limit"]["events_per_s"], runs[0]["relay"]["events_per_s"]
    for run in runs:
        run["vs_limit"] = run["events_per_s"] / limit
        run["vs_relay"] = run["events_per_s"] / relay_rate
    best2 = max((r["events_per_s"] for r in runs if r["shards"] == 2), default=float("nan"))
    return {"runs": runs, "limit_events_per_s": limit, "relay_events_per_s": relay_rate,
            "targets": {"two_shards_vs_limit": best2 / limit, "two_shards_vs_relay": best2 / relay_rate}}


def _flushes(path: Path, slots: set[str], after: float) -> list[float]:
    """Unix times of 'flushed' lines with rows for ``slots`` logged after ``after``."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "flushed" and event.get("slot") in slots and event.get("rows"):
            stamp = dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
            if stamp > after:
                out.append(stamp)
    return out


def scenario_takeover(srv: Servers, args: argparse.Namespace) -> dict[str, Any]:
    t = srv.database("bench_takeover", args.clickhouse_params)
    migrate(t, 4)
    writer = Child([*PYTHON_M, "bench.workload", "steady", "--dsn", t.pg_dsn, "--rate", str(args.takeover_rate),
                    "--connections", "4", "--duration", "3600", "--out", str(srv.logs / "takeover-writer.pickle")],
                   env=dict(os.environ), cwd=ROOT, log=srv.logs / "takeover-writer.log")
    argv = [*CDC, "run", "--flush-interval", "0.2"]
    workers = {k: Child(argv, env=t.env(), log=srv.logs / f"takeover-{k}.log") for k in range(2)}
    started = 2
    times: list[float] = []
    try:
        for kill in range(args.kills):
            owners = _wait_balanced(t, {c.pid for c in workers.values()})
            victim_key = kill % 2 if (kill % 2) in workers else next(iter(workers))
            victim = workers.pop(victim_key)
            slots = {f"cdc_outbox_{k}" for k in owners[victim.pid]}
            killed_at = time.time()
            victim.signal(signal.SIGKILL)
            victim.wait(timeout=30)
            deadline = time.monotonic() + 120
            first: float | None = None
            while first is None and time.monotonic() < deadline:
                time.sleep(0.1)
                seen = [ts for c in workers.values() for ts in _flushes(c.log, slots, killed_at)]
                first = min(seen) if seen else None
            if first is None:
                raise BenchError(f"takeover {kill + 1}: nobody stored a row of {sorted(slots)} within 120 s")
            times.append(first - killed_at)
            log(f"takeover {kill + 1}: {times[-1]:.2f} s ({len(slots)} shard(s))")
            workers[victim_key] = Child(argv, env=t.env(), log=srv.logs / f"takeover-{started}.log")
            started += 1
    finally:
        for child in [*workers.values(), writer]:
            child.signal(signal.SIGKILL)
            try:
                child.wait(timeout=30)
            except BenchError:
                pass
        srv.drop("bench_takeover")
    ordered = sorted(times)
    return {"kills": len(times), "seconds": times, "p50_s": ordered[len(ordered) // 2], "max_s": ordered[-1]}


def _wait_balanced(t: Target, pids: set[int], timeout: float = 120) -> dict[int, list[int]]:
    """Until both workers are alive and own 2 shards each: pid -> shard indexes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connect(t.pg_dsn) as conn:
            rows = conn.execute(
                "SELECT pid, shards FROM cdc_workers w WHERE EXISTS (SELECT 1 FROM pg_locks l WHERE "
                "l.locktype = 'advisory' AND l.pid = w.backend_pid)").fetchall()
        owners = {int(pid): sorted(shards) for pid, shards in rows}
        if set(owners) == pids and sorted(len(s) for s in owners.values()) == [2, 2]:
            time.sleep(1)  # and streaming: a walsender per slot
            return owners
        time.sleep(0.2)
    raise BenchError("the two workers did not settle on 2 shards each within 120 s")


SCENARIOS = {"walsender": scenario_walsender, "drain": scenario_drain, "takeover": scenario_takeover}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--txn-rows", type=int)
    parser.add_argument("--pg-kind", default="pg18")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--clickhouse-params", default="")
    parser.add_argument("--relay-batch", type=int, default=1000)
    parser.add_argument("--layouts", default="2x1,2x1t,2x2,4x1,4x1t,4x2",
                        help="drain: shards x workers after the 1x1 baseline (t: shards in threads)")
    parser.add_argument("--cdc-args", default="", help="extra flags for every `cdc run`, e.g. '--batch-rows 50000'")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--takeover-rate", type=float, default=1000.0, help="events/s written during the kills")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {}
    srv = Servers(args.pg_kind)
    try:
        for name in args.only.split(","):
            results[name] = SCENARIOS[name](srv, args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        srv.close()
    text = json.dumps(results, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

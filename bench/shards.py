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
"""

from __future__ import annotations

import argparse
import json
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

from . import workload
from .env import CDC, BenchError, Child, CpuMeter, Servers, Target, checked, connect, format_lsn, settle, wal_lsn

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


SCENARIOS = {"walsender": scenario_walsender}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--txn-rows", type=int)
    parser.add_argument("--pg-kind", default="pg18")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path)
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

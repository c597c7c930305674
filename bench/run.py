"""The cdc benchmark: one command, its own servers, every scenario side by side, one table and one JSON.

    python -m bench.run                      # the full run (about 20 minutes on 2 cores)
    python -m bench.run --quick              # small N, a couple of minutes
    python -m bench.run --json out.json --profile drain.speedscope.json

Scenarios (see bench/README.md for what each measures and how):

1. drain   N committed events (``--events``, default 1,000,000), timed until they are
           in ClickHouse and acknowledged, for the pipeline (``cdc run --until-lsn
           current``), the limit (``pg_recvlogical`` of the same server to /dev/null,
           from its own pgoutput slot) and the polling relay (bench/relay.py, on its
           own copy of the outbox). Also WAL bytes/event and CPU µs/event.
2. steady  ``--rate`` events/s from ``--connections`` connections in small
           transactions for ``--duration`` s while ``cdc run`` runs; per-event
           commit-to-visible latency (client clocks only).
3. memory  peak RSS of ``cdc run`` draining each of ``--memory-events``.
4. dedup   bytes per remembered id of the dedup window (bench/dedup_memory.py).
5. profile (only with ``--profile PATH``) one more drain under py-spy, summarized.

Servers are started the way the tests start them (tests/servers); nothing else
may run on the machine meanwhile if the numbers are to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: run as the bench.run module instead
    import runpy

    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    runpy.run_module("bench.run", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

from . import profiling
from .common import LOAD, log
from .drain import scenario_drain
from .env import Servers, snapshot_cdc
from .memory import scenario_dedup, scenario_memory
from .profiled import scenario_profile
from .report import checks, meta, table
from .steady import scenario_steady

FULL = {"events": 1_000_000, "txn_rows": 50_000, "duration": 60.0, "memory_events": "1000000,5000000",
        "dedup_sizes": "1000000,10000000"}
QUICK = {"events": 50_000, "txn_rows": 10_000, "duration": 10.0, "memory_events": "50000,250000",
         "dedup_sizes": "100000,1000000"}
SCENARIOS = ("drain", "steady", "memory", "dedup")


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small sizes for a quick look: {QUICK}")
    parser.add_argument("--events", type=int, help=f"backlog of the drain scenario (default {FULL['events']:,})")
    parser.add_argument("--txn-rows", type=int, help="rows per backlog transaction (default 50,000)")
    parser.add_argument("--rate", type=float, default=5000.0, help="steady state: offered events/s")
    parser.add_argument("--connections", type=int, default=8, help="steady state: concurrent writers")
    parser.add_argument("--duration", type=float, help="steady state: seconds (default 60)")
    parser.add_argument("--max-txn", type=int, default=9, help="steady state: events per txn, uniform 1..N")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="steady state: ClickHouse poll (s)")
    parser.add_argument("--memory-events", help="comma-separated backlogs for peak RSS ('' or none: skip); "
                        f"default {FULL['memory_events']}")
    parser.add_argument("--dedup-sizes", help=f"dedup window sizes ('' or none: skip); default {FULL['dedup_sizes']}")
    parser.add_argument("--relay-batch", type=int, default=1000)
    parser.add_argument("--pg-kind", default="pg18", choices=["pg18", "pg15"])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--profile", metavar="PATH", help="also drain under py-spy; speedscope file to write")
    parser.add_argument("--profile-events", type=int, help="backlog of the profiled drain (default --events)")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--cdc-ref", metavar="REF", help="measure this commit's cdc (a snapshot of it) instead of "
                        "the working tree, which others may change during a long run")
    parser.add_argument("--cdc-args", default="", help="extra flags for every `cdc run`, e.g. '--batch-rows 20000' "
                        "(default: none, i.e. cdc's defaults)")
    parser.add_argument("--clickhouse-params", default="", metavar="QUERY",
                        help="appended to cdc's ClickHouse URL, e.g. compression=none (default: none)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="PostgreSQL setting to apply before the run, e.g. fsync=on (repeatable)")
    parser.add_argument("--logs", metavar="DIR", help="keep the children's logs (cdc run, relay...) here")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.scenarios = [s.strip() for s in args.only.split(",")] if args.only else list(SCENARIOS)
    args.cdc_run_args = shlex.split(args.cdc_args)
    try:
        args.pg_settings = dict(item.split("=", 1) for item in args.pg_setting)
    except ValueError:
        parser.error("--pg-setting takes NAME=VALUE")
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results: dict[str, Any] = {}
    srv: Servers | None = None
    needs_servers = bool({"drain", "steady", "memory"} & set(args.scenarios)) or args.profile
    started = time.monotonic()
    snapshot_dir = None
    try:
        if args.cdc_ref:
            snapshot_dir = Path(tempfile.mkdtemp(prefix="cdc-bench-snapshot-"))
            args.cdc_sha, site = snapshot_cdc(args.cdc_ref, snapshot_dir)
            # Every child (cdc run, cdc migrate, the dedup measurement) imports this copy first.
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
            log(f"measuring cdc at {args.cdc_ref} = {args.cdc_sha[:12]} (snapshot in {site})")
        if needs_servers:
            log(f"starting PostgreSQL ({args.pg_kind}) and ClickHouse")
            srv = Servers(args.pg_kind)
            if args.pg_settings:
                srv.postgres.set_config(**args.pg_settings)
        results["meta"] = meta(srv, args, argv)
        assert srv is not None or not needs_servers
        if "drain" in args.scenarios:
            results["drain"] = scenario_drain(srv, args)  # type: ignore[arg-type]
        if "steady" in args.scenarios:
            results["steady"] = scenario_steady(srv, args)  # type: ignore[arg-type]
        if "memory" in args.scenarios:
            results["memory"] = scenario_memory(srv, args, results.get("drain"))  # type: ignore[arg-type]
        if "dedup" in args.scenarios:
            results["dedup"] = scenario_dedup(args)
        if args.profile:
            results["profile"] = scenario_profile(srv, args, results.get("drain"))  # type: ignore[arg-type]
    finally:
        if srv is not None:
            if args.logs:
                shutil.copytree(srv.logs, args.logs, dirs_exist_ok=True)
            srv.close()
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)
    d = results.get("drain")
    if d:
        results["wal"] = {"pipeline_bytes_per_event": d["pipeline"]["wal_bytes_per_event"],
                          "relay_bytes_per_event": d["relay"]["wal_bytes_per_event"],
                          "backlog_insert_bytes_per_event": d["backlog"]["wal_bytes_per_event"]}
        results["cpu"] = {"pipeline_us_per_event": d["pipeline"]["cpu_us_per_event"],
                          "pipeline_net_us_per_event": d["pipeline"]["net_cpu_us_per_event"],
                          "relay_us_per_event": d["relay"]["cpu_us_per_event"]}
        if results.get("steady"):
            results["cpu"]["steady_us_per_event"] = results["steady"]["pipeline"]["cpu_us_per_event"]
            results["cpu"]["steady_net_us_per_event"] = results["steady"]["pipeline"]["steady_cpu_us_per_event"]
    results["checks"] = checks(results)
    results["meta"]["total_seconds"] = time.monotonic() - started
    log("done")
    results["meta"]["loadavg_1min"] = [{"load": load, "at": what} for load, what in LOAD]
    print(table(results))
    if results.get("profile"):
        print()
        print(profiling.format_summary(results["profile"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""5. profile: one more drain under py-spy, and where its time goes (bench/profiling.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import profiling
from .common import log, migrate, load, pipeline_drain
from .env import Servers


def scenario_profile(srv: Servers, args: argparse.Namespace, drain: dict[str, Any] | None) -> dict[str, Any]:
    n = args.profile_events or args.events
    db = "bench_profile"
    t = srv.database(db, args.clickhouse_params)
    migrate(srv, t)
    load(t, n, args.txn_rows)
    out = Path(args.profile).resolve()
    p = pipeline_drain(srv, args, t, db, expect_rows=n, name="profile",
                       wrap=lambda command: profiling.record_argv(out, command, rate=args.profile_rate))
    srv.drop(db)
    summary = profiling.summarize(out, events=n, rate=args.profile_rate)
    summary["events"] = n
    summary["seconds_under_py_spy"] = p["seconds"]
    # py-spy's sample counts drift with load; the CPU the unprofiled drain really used (wait4) does not.
    # Share it out by each stage's part of the working (not waiting) samples.
    if drain is not None and drain["events"] == n:
        cpu = drain["pipeline"]["cpu_us_per_event"]
        working = sum(st["samples"] for st in summary["stages"] if st["name"] != "waiting") or 1
        summary["cpu_us_per_event_scale"] = cpu
        for st in summary["stages"]:
            st["cpu_us_per_event"] = 0.0 if st["name"] == "waiting" else round(st["samples"] / working * cpu, 2)
    log(f"profile written to {out}")
    return summary

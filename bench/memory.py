"""3. memory and 4. dedup: peak RSS of cdc run by backlog size; bytes per id of the dedup window."""

from __future__ import annotations

import argparse
from typing import Any

from . import dedup_memory
from .common import load, log, migrate, pipeline_drain, sizes
from .env import Servers
from .restart import scenario_restart


def scenario_memory(srv: Servers, args: argparse.Namespace, drain: dict[str, Any] | None) -> dict[str, Any]:
    backlogs = sizes(args.memory_events)
    if not backlogs:
        return {"skipped": True, "runs": []}
    runs: list[dict[str, Any]] = []
    restarts: list[dict[str, Any]] = []
    for n in backlogs:
        if drain is not None and drain["events"] == n:
            p = drain["pipeline"]
            runs.append({"events": n, "peak_rss_mb": p["peak_rss_mb"], "seconds": p["seconds"],
                         "events_per_s": p["events_per_s"], "cpu_us_per_event": p["cpu_us_per_event"],
                         "source": "drain scenario", "rss_mb_timeline": p["rss_mb_timeline"],
                         "cpu_elsewhere": p["cpu_elsewhere"]})
            continue
        db = f"bench_mem_{n}"
        t = srv.database(db, args.clickhouse_params)
        migrate(srv, t)
        load(t, n, args.txn_rows)
        p = pipeline_drain(srv, args, t, db, expect_rows=n, name=f"memory-{n}")
        log(f"memory: {n:,} events drained at {p['events_per_s']:,.0f}/s, peak RSS {p['peak_rss_mb']:.0f} MB")
        # Then a restart: nothing to stream, the dedup window to rebuild (full once n >= the window).
        restarts.append(scenario_restart(srv, args, t, db, n))
        srv.drop(db)
        runs.append({"events": n, "peak_rss_mb": p["peak_rss_mb"], "seconds": p["seconds"],
                     "events_per_s": p["events_per_s"], "cpu_us_per_event": p["cpu_us_per_event"],
                     "source": "own run", "rss_mb_timeline": p["rss_mb_timeline"],
                     "cpu_elsewhere": p["cpu_elsewhere"]})
    runs.sort(key=lambda r: r["events"])
    first, last = runs[0]["peak_rss_mb"], runs[-1]["peak_rss_mb"]
    peaks = [r["peak_rss_mb"] for r in runs + restarts]
    return {"skipped": False, "runs": runs, "restarts": restarts, "max_rss_mb": max(peaks),
            "growth_pct": (last - first) / first * 100 if len(runs) > 1 else 0.0}


# -- 4. dedup --------------------------------------------------------------------------------------


def scenario_dedup(args: argparse.Namespace) -> dict[str, Any]:
    rows = [dedup_memory.run_child(size, 1000, 1) for size in sizes(args.dedup_sizes)]
    for r in rows:
        log(f"dedup: {r['capacity']:,} ids, {r['nbytes_per_id']:.1f} B/id arrays, {r['rss_per_id']:.1f} B/id RSS")
    return {"sizes": rows, "skipped": not rows}

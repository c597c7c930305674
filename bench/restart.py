"""A restart with a full dedup window: what start-up costs before the first event moves.

Two ways to measure it:

* ``scenario_restart`` (called by the memory scenario after each of its drains):
  ``cdc run --until-lsn current`` once more on the drained database, an empty
  backlog with a full window to rebuild (the newest ``--dedup-window`` ids of
  the progress table). Peak RSS and CPU of the whole process, and the rebuild's
  own wall and CPU seconds from cdc's "dedup window rebuilt" log line.
* ``python -m bench.restart --ids 1100000 --runs 3 [--against DIR]``: only the rebuild, in fresh
  interpreters, against a ClickHouse whose progress table is filled on the
  server (no PostgreSQL, no drain: a minute instead of ten). Each child imports
  what ``cdc run`` imports, allocates the window, then rebuilds it, and prints
  its RSS high-water mark at each step; the rebuild's transient memory is the
  last minus the one before. Memory does not depend on the machine's load;
  CPU seconds depend on it less than wall seconds. ``--against DIR`` also runs
  the cdc/ under DIR (a snapshot of another commit, its accelerator built),
  alternating with this tree's, compiled paths only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import MB, log, pipeline_drain
from .env import ROOT, Servers, Target, start_clickhouse

_CHILD = r"""
import json, sys, time, resource
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
import cdc.cli, cdc.pipeline.pipeline  # what `cdc run` imports
from cdc.accel import accelerator_status
from cdc.core.dedup import DedupWindow
from cdc.sink.clickhouse import ClickHouseSink
url, capacity = sys.argv[1], int(sys.argv[2])
out = {"accelerator": accelerator_status(), "hwm_imported": hwm()}
sink = ClickHouseSink(url)
window = DedupWindow(capacity=capacity)
out["hwm_window"] = hwm()
wall, cpu0 = time.perf_counter(), cpu()
if hasattr(sink, "recent_unique_id_blocks"):  # what Pipeline.remember_recent_ids does, streamed
    from itertools import chain
    window.remember(chain.from_iterable(sink.recent_unique_id_blocks(capacity, 3600.0)), time.monotonic())
else:  # before: the whole list first
    window.remember(sink.recent_unique_ids(capacity, 3600.0), time.monotonic())
out["wall_s"], out["cpu_s"] = time.perf_counter() - wall, cpu() - cpu0
out["ids"], out["hwm_rebuilt"] = len(window), hwm()
print(json.dumps(out))
"""


def scenario_restart(srv: Servers, args: argparse.Namespace, t: Target, database: str, n: int) -> dict[str, Any]:
    """``cdc run`` again on a drained database: nothing to stream, a full window to rebuild."""
    p = pipeline_drain(srv, args, t, database, expect_rows=n, name=f"restart-{n}")
    rebuilt = _rebuild_line(srv.logs / f"restart-{n}.log")
    log(f"restart after {n:,}: peak RSS {p['peak_rss_mb']:.0f} MB, {p['seconds']:.2f} s, "
        f"rebuild {rebuilt.get('seconds')} s ({rebuilt.get('cpu_s')} CPU s) for {rebuilt.get('ids')} ids")
    return {"events": n, "peak_rss_mb": p["peak_rss_mb"], "seconds": p["seconds"], "cpu_s": p["cpu_s"],
            "rebuild": rebuilt, "rss_mb_timeline": p["rss_mb_timeline"]}


def _rebuild_line(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        if line.startswith("{") and '"dedup window rebuilt"' in line:
            event = json.loads(line)
            return {k: event.get(k) for k in ("ids", "seconds", "cpu_s")}
    return {}


def fill_progress(ch: Any, database: str, ids: int) -> None:
    """The sink's tables, and ``ids`` progress rows made on the server (UUID-shaped, like the workload's)."""
    code = ("import sys; from cdc.sink.clickhouse import ClickHouseSink; s = ClickHouseSink(sys.argv[1]); "
            "s.ensure_schema(); s.close()")
    subprocess.run([sys.executable, "-c", code, ch.url(database)], check=True, capture_output=True, text=True,
                   timeout=120)
    ch.execute(
        f"INSERT INTO {database}.events_cdc_progress (unique_id, commit_lsn, commit_seq, committed_at, inserted_at) "
        f"SELECT lower(UUIDNumToString(MD5(toString(number)))), 16777216 + intDiv(number, 5) * 64, number % 5, "
        f"now(), now() FROM system.numbers LIMIT {int(ids)}"
    )


def rebuild_child(url: str, capacity: int, env: dict[str, str], cwd: Path | None = None) -> dict[str, Any]:
    # python -c puts the working directory first on sys.path: cwd chooses whose cdc/ is measured.
    done = subprocess.run([sys.executable, "-c", _CHILD, url, str(capacity)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=cwd)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    out["transient_mb"] = (out["hwm_rebuilt"] - out["hwm_window"]) / MB
    for key in ("hwm_imported", "hwm_window", "hwm_rebuilt"):
        out[key.replace("hwm", "peak") + "_mb"] = out.pop(key) / MB
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_100_000, help="progress rows in ClickHouse")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="the dedup window (cdc's default)")
    parser.add_argument("--runs", type=int, default=3, help="fresh interpreters per path")
    parser.add_argument("--against", metavar="DIR", type=Path, help="also the cdc/ in DIR, alternating")
    args = parser.parse_args()
    plain = {k: v for k, v in os.environ.items() if k != "CDC_NO_ACCEL"}
    paths: list[tuple[str, dict[str, str], Path | None]] = (
        [("against", plain, args.against.resolve()), ("this tree", plain, ROOT)] if args.against
        else [("compiled", plain, ROOT), ("pure", plain | {"CDC_NO_ACCEL": "1"}, ROOT)])
    with tempfile.TemporaryDirectory(prefix="cdc-bench-restart-") as root:
        ch = start_clickhouse(Path(root) / "clickhouse")
        try:
            database = "bench_restart"
            url = ch.url(database)
            fill_progress(ch, database, args.ids)
            log(f"restart: {args.ids:,} progress rows, window {args.capacity:,}")
            rows: dict[str, list[dict[str, Any]]] = {path: [] for path, _, _ in paths}
            for run in range(args.runs):
                for path, env, cwd in paths[::-1] if run % 2 else paths:
                    r = rebuild_child(url, args.capacity, env, cwd)
                    rows[path].append(r)
                    log(f"{path}: {r['ids']:,} ids, peak {r['peak_rebuilt_mb']:.1f} MB (imports "
                        f"{r['peak_imported_mb']:.1f}, window {r['peak_window_mb']:.1f}, rebuild +"
                        f"{r['transient_mb']:.1f}), {r['wall_s']:.2f} s wall, "
                        f"{r['cpu_s']:.2f} CPU s")
            for path, runs in rows.items():
                print(f"{path:9} peak RSS {statistics.median(r['peak_rebuilt_mb'] for r in runs):6.1f} MB  "
                      f"rebuild +{statistics.median(r['transient_mb'] for r in runs):6.1f} MB  "
                      f"wall {statistics.median(r['wall_s'] for r in runs):5.2f} s  "
                      f"CPU {statistics.median(r['cpu_s'] for r in runs):5.2f} s (median of {len(runs)})")
        finally:
            ch.destroy()


if __name__ == "__main__":
    main()

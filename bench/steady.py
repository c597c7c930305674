"""2. steady state: events at a fixed rate from several connections; commit-to-visible latency."""

from __future__ import annotations

import argparse
import bisect
import pickle
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from clickhouse_driver import Client

from .common import SLOT, MB, log, migrate, cdc_run
from .env import PYTHON_M, ROOT, BenchError, Child, CpuMeter, Servers, _tree_cpu_s, connect


class Poller(threading.Thread):
    """Asks ClickHouse every `interval` s for events newer than the last seen; notes when each id first shows."""

    def __init__(self, client: Client, interval: float) -> None:
        super().__init__(name="visibility-poller", daemon=True)
        self.client, self.interval = client, interval
        self.seen: dict[str, float] = {}
        self.halt = threading.Event()
        self.polls = 0
        self.poll_seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        last = 0
        seen, monotonic = self.seen, time.monotonic
        query = "SELECT unique_id, commit_lsn FROM events_cdc_progress WHERE commit_lsn >= %(lsn)s"
        try:
            while not self.halt.is_set():
                sent = monotonic()
                rows = self.client.execute(query, {"lsn": last})
                now = monotonic()  # an upper bound of when these rows became visible
                for uid, lsn in rows:
                    if uid not in seen:
                        seen[uid] = now
                    if lsn > last:
                        last = lsn
                self.polls += 1
                self.poll_seconds += now - sent
                self.halt.wait(max(0.0, sent + self.interval - monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc


class LagSampler(threading.Thread):
    """Every second: the slot's lag in WAL bytes (server position minus acknowledged position)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.dsn = dsn
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with connect(self.dsn) as conn:
            while not self.halt.wait(1.0):
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                    "FROM pg_replication_slots WHERE slot_name = %s", (SLOT,),
                ).fetchone()
                if row is not None and row[0] is not None:
                    self.samples.append((time.monotonic(), int(row[0])))


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def run_writers(dsn: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The steady-state writers (bench.workload) at ``args.rate`` from ``args.connections`` connections for
    ``args.duration`` s; their record (commit times and ids), read back from ``out``."""
    gen = subprocess.run(
        [*PYTHON_M, "bench.workload", "steady", "--dsn", dsn, "--rate", str(args.rate),
         "--connections", str(args.connections), "--duration", str(args.duration),
         "--max-txn", str(args.max_txn), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 120,
    )
    if gen.returncode != 0:
        raise BenchError(f"the steady-state writer failed:\n{gen.stdout[-2000:]}\n{gen.stderr[-3000:]}")
    with open(out, "rb") as f:
        written: dict[str, Any] = pickle.load(f)
    out.unlink()
    return written


def scenario_steady(srv: Servers, args: argparse.Namespace) -> dict[str, Any]:
    db = "bench_steady"
    t = srv.database(db, args.clickhouse_params)
    migrate(srv, t)
    pipeline = Child(cdc_run(args), env=t.env(), log=srv.logs / "steady-pipeline.log", cwd=srv.root)
    poller: Poller | None = None
    sampler = LagSampler(t.pg_dsn)
    try:
        deadline = time.monotonic() + 60
        with connect(t.pg_dsn) as conn:
            while not conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone()[0]:  # type: ignore[index]
                if not pipeline.running() or time.monotonic() > deadline or pipeline.proc.poll() is not None:
                    raise BenchError(f"cdc run did not start streaming; log: {pipeline.log}")
                time.sleep(0.1)
        poller = Poller(srv.clickhouse.client(db), args.poll_interval)
        poller.start()
        sampler.start()
        out = srv.logs / "steady-commits.pickle"
        log(f"steady state: {args.rate:,.0f} events/s from {args.connections} connections for {args.duration:.0f} s")
        meter = CpuMeter(srv.cpu_groups()).__enter__()
        cpu_before = _tree_cpu_s(pipeline.pid)
        written = run_writers(t.pg_dsn, args, out)
        meter.__exit__()
        commits: list[tuple[float, list[str]]] = written["commits"]
        ids = {uid for _, batch in commits for uid in batch}
        wait_until = time.monotonic() + 60
        while time.monotonic() < wait_until and poller.error is None:
            if len(ids.difference(poller.seen)) == 0:
                break
            time.sleep(0.1)
        # The steady state proper: from the writers' start until their last event is visible, leaving out
        # the start-up (imports, checks, the window's rebuild) and the idle wait for the writers.
        cpu_steady = _tree_cpu_s(pipeline.pid) - cpu_before
        poller.halt.set()
        sampler.halt.set()
        poller.join()
        sampler.join()
        if poller.error is not None:
            raise BenchError(f"polling ClickHouse failed: {poller.error!r}")
    finally:
        pipeline.signal()
    result = pipeline.wait(timeout=args.duration + 600).check()
    srv.drop(db)

    t0 = written["t0"]
    seen = poller.seen
    points = [(tc - t0, seen[uid] - tc) for tc, batch in commits for uid in batch if uid in seen]
    missing = len(ids) - len(points)
    latencies = sorted(lat for _, lat in points)
    # Latency over the run, in windows: does it grow (falling behind) or stay flat (keeping up)?
    window = max(args.duration / 6, 1.0)
    windows: list[dict[str, Any]] = []
    by_time = sorted(points)
    starts = [p[0] for p in by_time]
    w = 0.0
    while w < args.duration:
        lo, hi = bisect.bisect_left(starts, w), bisect.bisect_left(starts, w + window)
        chunk = sorted(lat for _, lat in by_time[lo:hi])
        if chunk:
            windows.append({"from_s": round(w, 1), "events": len(chunk), "p50_s": percentile(chunk, 50),
                            "p99_s": percentile(chunk, 99)})
        w += window
    n = len(points)
    mean_x = sum(x for x, _ in points) / n if n else 0.0
    mean_y = sum(y for _, y in points) / n if n else 0.0
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx else 0.0
    growth_s = slope * args.duration
    lag_bytes = [b for _, b in sampler.samples]
    events = written["events"]
    kept_up = (missing == 0 and written["achieved_per_s"] >= 0.95 * args.rate and growth_s < 0.5)
    return {
        "offered_per_s": args.rate, "achieved_per_s": written["achieved_per_s"], "connections": args.connections,
        "duration_s": args.duration, "events": events, "transactions": written["transactions"],
        "events_per_txn": events / max(written["transactions"], 1), "missing": missing,
        "latency_s": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                      "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else float("nan"),
                      "min": latencies[0] if latencies else float("nan")},
        "latency_windows": windows, "latency_growth_s_over_run": growth_s, "kept_up": kept_up,
        "slot_lag_bytes": {"max": max(lag_bytes, default=0), "last": lag_bytes[-1] if lag_bytes else 0,
                           "samples": len(lag_bytes)},
        "poll_interval_s": args.poll_interval, "polls": poller.polls,
        "mean_poll_query_s": poller.poll_seconds / max(poller.polls, 1), "cpu_elsewhere": meter.as_dict(),
        "pipeline": {"cpu_s": result.cpu_s, "cpu_us_per_event": result.cpu_s / max(events, 1) * 1e6,
                     "steady_cpu_s": cpu_steady, "steady_cpu_us_per_event": cpu_steady / max(events, 1) * 1e6,
                     "peak_rss_mb": result.maxrss_bytes / MB, "wall_s": result.seconds},
    }

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
import bisect
import datetime as dt
import json
import os
import pickle
import shlex
import shutil
import tempfile
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: run as the bench.run module instead
    import runpy

    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    runpy.run_module("bench.run", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

from clickhouse_driver import Client

from cdc.pg.preflight import protocol_version

from . import dedup_memory, profiling, relay, workload
from .env import (
    CDC, PYTHON_M, ROOT, BenchError, Child, Servers, Target, checked, clickhouse_rows, confirmed_lsn, connect,
    CpuMeter, autovacuums, clickhouse_events, delta, format_lsn, settle, snapshot_cdc, wal_lsn,
)

SLOT = "cdc_outbox"
# Two slots for pg_recvlogical: one drains the backlog before the pipeline does, one after.
LIMIT_SLOTS = ("bench_limit_before", "bench_limit_after")
MB = 1024 * 1024

FULL = {"events": 1_000_000, "txn_rows": 50_000, "duration": 60.0, "memory_events": "1000000,5000000",
        "dedup_sizes": "1000000,10000000"}
QUICK = {"events": 50_000, "txn_rows": 10_000, "duration": 10.0, "memory_events": "50000,250000",
         "dedup_sizes": "100000,1000000"}
SCENARIOS = ("drain", "steady", "memory", "dedup")

TARGETS = {
    "drain_vs_limit": 0.8,      # pipeline events/s >= 0.8 x pg_recvlogical
    "drain_vs_relay": 2.0,      # pipeline events/s >= 2 x polling relay
    "steady_p99_s": 2.0,        # commit-to-visible p99 at the offered rate
    "rss_mb": 200.0,            # peak RSS of cdc run
    "rss_growth_pct": 10.0,     # between the smallest and the largest memory backlog
    "dedup_bytes_per_id": 64.0,
}


# (1-minute load average, what was happening): others' work on the machine skews every number.
LOAD: list[tuple[float, str]] = []


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def log(message: str) -> None:
    load = loadavg()
    LOAD.append((load, message))
    print(f"[bench {time.strftime('%H:%M:%S')} load {load:.2f}] {message}", file=sys.stderr, flush=True)


# -- shared steps ----------------------------------------------------------------------------------


def migrate(srv: Servers, t: Target) -> None:
    checked(subprocess.run([*CDC, "migrate"], env=t.env(), cwd=srv.root, capture_output=True, text=True, timeout=300))


def cdc_run(args: argparse.Namespace, *extra: str) -> list[str]:
    return [*CDC, "run", *extra, *args.cdc_run_args]


def relay_schema(srv: Servers, url: str) -> None:
    """The relay's ClickHouse tables, made by the measured cdc's own sink: the same layout as the pipeline's."""
    code = ("import sys; from cdc.sink.clickhouse import ClickHouseSink; s = ClickHouseSink(sys.argv[1]); "
            "s.ensure_schema(); s.close()")
    checked(subprocess.run([sys.executable, "-c", code, url], cwd=srv.root, capture_output=True, text=True,
                           timeout=120))


def load(t: Target, n: int, txn_rows: int) -> dict[str, Any]:
    with connect(t.pg_dsn) as conn:
        before = wal_lsn(conn)
        info = workload.load_backlog(conn, n, txn_rows=txn_rows)
        info["wal_bytes_per_event"] = (wal_lsn(conn) - before) / max(n, 1)
        settle(conn, "outbox")
    log(f"loaded {n:,} events in {info['transactions']} transactions, {info['seconds']:.1f} s")
    return info


def pipeline_drain(
    srv: Servers, args: argparse.Namespace, t: Target, database: str, *, expect_rows: int, name: str,
    wrap: Any = None,
) -> dict[str, Any]:
    """``cdc run --until-lsn current`` as a child; checks every row is stored and the slot acknowledged."""
    with connect(t.pg_dsn) as conn:
        wal_before = target = wal_lsn(conn)
    command = cdc_run(args, "--until-lsn", "current")
    ch_before = clickhouse_events(srv)
    with CpuMeter(srv.cpu_groups()) as meter:
        child = Child(wrap(command) if wrap else command, env=t.env(), log=srv.logs / f"{name}.log", cwd=srv.root)
        result = child.wait(timeout=180 + expect_rows / 1000).check()
    with connect(t.pg_dsn) as conn:
        wal_after = wal_lsn(conn)
        confirmed = confirmed_lsn(conn, SLOT) or 0
    stored = clickhouse_rows(srv, database)
    if stored != expect_rows:
        raise BenchError(f"{name}: ClickHouse holds {stored} events, expected {expect_rows}\n{result.log_tail()}")
    if confirmed < target:
        raise BenchError(f"{name}: slot acknowledged {format_lsn(confirmed)}, not the backlog's end {format_lsn(target)}")
    n = max(expect_rows, 1)
    streaming = _streaming_window(result.log)
    return {
        "events": expect_rows, "seconds": result.seconds, "events_per_s": expect_rows / result.seconds,
        # From cdc's own log: first "streaming" to last "flushed", i.e. without start-up and the tail wait.
        "streaming_seconds": streaming, "streaming_events_per_s": expect_rows / streaming if streaming else None,
        "cpu_s": result.cpu_s, "user_s": result.user_s, "sys_s": result.sys_s, "cpu_us_per_event": result.cpu_s / n * 1e6,
        "peak_rss_mb": result.maxrss_bytes / MB, "wal_bytes": wal_after - wal_before,
        "wal_bytes_per_event": (wal_after - wal_before) / n,
        "cpu_elsewhere": meter.as_dict(), "clickhouse_events": delta(clickhouse_events(srv), ch_before),
        "rss_mb_timeline": [(ts, round(rss / MB, 1)) for ts, rss in result.rss_samples[:: max(1, len(result.rss_samples) // 20)]],
    }


def _streaming_window(log_path: Path) -> float | None:
    started = flushed = None
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        stamp = event.get("timestamp")
        if not stamp:
            continue
        if event.get("event") == "streaming" and started is None:
            started = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        elif event.get("event") == "flushed":
            flushed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if started is None or flushed is None or flushed <= started:
        return None
    return (flushed - started).total_seconds()


# -- 1. backlog drain ------------------------------------------------------------------------------


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


# -- 2. steady state -------------------------------------------------------------------------------


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
        except BaseException as exc:  # reported by the scenario
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
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


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
        gen = subprocess.run(
            [*PYTHON_M, "bench.workload", "steady", "--dsn", t.pg_dsn, "--rate", str(args.rate),
             "--connections", str(args.connections), "--duration", str(args.duration),
             "--max-txn", str(args.max_txn), "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 120,
        )
        meter.__exit__()
        if gen.returncode != 0:
            raise BenchError(f"the steady-state writer failed:\n{gen.stdout[-2000:]}\n{gen.stderr[-3000:]}")
        with open(out, "rb") as f:
            written = pickle.load(f)
        out.unlink()
        commits: list[tuple[float, list[str]]] = written["commits"]
        ids = {uid for _, batch in commits for uid in batch}
        wait_until = time.monotonic() + 60
        while time.monotonic() < wait_until and poller.error is None:
            if len(ids.difference(poller.seen)) == 0:
                break
            time.sleep(0.1)
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
                     "peak_rss_mb": result.maxrss_bytes / MB, "wall_s": result.seconds},
    }


# -- 3. memory -------------------------------------------------------------------------------------


def scenario_memory(srv: Servers, args: argparse.Namespace, drain: dict[str, Any] | None) -> dict[str, Any]:
    sizes = _sizes(args.memory_events)
    if not sizes:
        return {"skipped": True, "runs": []}
    runs = []
    for n in sizes:
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
        srv.drop(db)
        log(f"memory: {n:,} events drained at {p['events_per_s']:,.0f}/s, peak RSS {p['peak_rss_mb']:.0f} MB")
        runs.append({"events": n, "peak_rss_mb": p["peak_rss_mb"], "seconds": p["seconds"],
                     "events_per_s": p["events_per_s"], "cpu_us_per_event": p["cpu_us_per_event"],
                     "source": "own run", "rss_mb_timeline": p["rss_mb_timeline"],
                     "cpu_elsewhere": p["cpu_elsewhere"]})
    runs.sort(key=lambda r: r["events"])
    first, last = runs[0]["peak_rss_mb"], runs[-1]["peak_rss_mb"]
    return {"skipped": False, "runs": runs, "max_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "growth_pct": (last - first) / first * 100 if len(runs) > 1 else 0.0}


# -- 4. dedup --------------------------------------------------------------------------------------


def scenario_dedup(args: argparse.Namespace) -> dict[str, Any]:
    sizes = _sizes(args.dedup_sizes)
    rows = [dedup_memory.run_child(size, 1000, 1) for size in sizes]
    for r in rows:
        log(f"dedup: {r['capacity']:,} ids, {r['nbytes_per_id']:.1f} B/id arrays, {r['rss_per_id']:.1f} B/id RSS")
    return {"sizes": rows, "skipped": not rows}


# -- 5. profile ------------------------------------------------------------------------------------


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


# -- report ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip() and s.strip().lower() != "none"]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "ram_gib": round(mem / 1024**3, 1), "cpu_model": cpu,
            "python": platform.python_version(), "kernel": platform.release()}


def meta(srv: Servers | None, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    if args.cdc_ref:
        commit, dirty, source = args.cdc_sha, [], f"snapshot of {args.cdc_ref}"
    else:
        commit = _git("rev-parse", "HEAD").strip()
        dirty = [line[3:] for line in _git("status", "--porcelain", "--", "cdc", "sql", "migrations").splitlines()]
        source = "working tree"
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "cdc_source": source, "uncommitted_cdc_files": dirty,
        "bench_commit": _git("rev-parse", "HEAD").strip(),
        "command": " ".join(["python -m bench.run", *map(shlex.quote, argv)]), "machine": machine(),
        "cdc_run_args": args.cdc_run_args or "defaults", "clickhouse_params": args.clickhouse_params, "pg_kind": args.pg_kind, "pg_settings": args.pg_settings,
    }
    if srv is not None:
        with connect(srv.postgres.dsn()) as conn:
            info["postgres"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        info["clickhouse"] = srv.clickhouse.version
    return info


def _ok(value: float, target: float, *, at_most: bool) -> str:
    good = value <= target if at_most else value >= target
    return "yes" if good else "NO"


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, target: float, at_most: bool) -> None:
        out.append({"name": name, "value": value, "target": target, "at_most": at_most,
                    "ok": value <= target if at_most else value >= target})

    d = results.get("drain")
    if d:
        add("drain pipeline/limit", d["ratios"]["pipeline_vs_limit"], TARGETS["drain_vs_limit"], False)
        add("drain pipeline/relay", d["ratios"]["pipeline_vs_relay"], TARGETS["drain_vs_relay"], False)
    s = results.get("steady")
    if s:
        add("steady p99 latency (s)", s["latency_s"]["p99"], TARGETS["steady_p99_s"], True)
        out.append({"name": "steady kept up", "value": s["kept_up"], "target": True, "ok": bool(s["kept_up"])})
    m = results.get("memory")
    if m and not m.get("skipped"):
        add("peak RSS (MB)", m["max_rss_mb"], TARGETS["rss_mb"], True)
        if len(m["runs"]) > 1:
            add("RSS growth smallest->largest backlog (%)", abs(m["growth_pct"]), TARGETS["rss_growth_pct"], True)
    dd = results.get("dedup")
    if dd and not dd.get("skipped"):
        add("dedup RSS bytes/id (largest)", dd["sizes"][-1]["rss_per_id"], TARGETS["dedup_bytes_per_id"], True)
    return out


def _others(result: dict[str, Any]) -> str:
    """CPU taken by processes outside the benchmark while this was measured (0 = a quiet machine)."""
    used = result.get("cpu_elsewhere")
    return f"[others {used['foreign_cores']:.1f} CPU]" if used else ""


def _load_range(samples: list[dict[str, Any]]) -> str:
    loads = [s["load"] for s in samples]
    return f"{min(loads):.2f} to {max(loads):.2f}" if loads else "?"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, value: str = "", target: str = "", ok: str = "") -> None:
        rows.append((label, value, target, ok))

    m = results["meta"]
    mc = m["machine"]
    head = (f"cdc benchmark {m['date']}  cdc {m['commit'][:10]} ({m['cdc_source']}"
            f"{', with uncommitted changes' if m['uncommitted_cdc_files'] else ''})  cdc run flags: {m['cdc_run_args']}"
            f"{'  PG settings: ' + str(m['pg_settings']) if m['pg_settings'] else ''}"
            f"{'  ClickHouse URL params: ' + m['clickhouse_params'] if m.get('clickhouse_params') else ''}\n"
            f"PostgreSQL {m.get('postgres', '?')} ({m['pg_kind']}), ClickHouse {m.get('clickhouse', '?')}, "
            f"{mc['nproc']} CPUs {mc['cpu_model']}, {mc['ram_gib']} GiB, Python {mc['python']}\n"
            f"command: {m['command']}\n"
            f"1-min load average while running: {_load_range(m.get('loadavg_1min', []))} "
            f"(the machine has {mc['nproc']} CPUs; the benchmark itself keeps about 2 busy).\n"
            f"[others x CPU]: CPUs used on average by processes outside the benchmark while that was timed.")
    d = results.get("drain")
    if d:
        b = d["backlog"]
        p, lim, rel = d["pipeline"], d["limit"], d["relay"]
        row(f"1. backlog drain: {d['events']:,} events ({b['transactions']} txns of {b['rows_per_txn']:,})")
        row("   pipeline  cdc run --until-lsn current",
            f"{p['events_per_s']:>9,.0f} ev/s  {p['seconds']:6.1f} s  {_others(p)}")
        for run, when in zip(lim.get("runs", [lim]), ("before", "after")):
            row(f"   limit     pg_recvlogical -> /dev/null ({when})",
                f"{run['events_per_s']:>9,.0f} ev/s  {run['seconds']:6.1f} s  {_others(run)}")
        row(f"   relay     poll {rel['batch']}/FOR UPDATE/UPDATE",
            f"{rel['events_per_s']:>9,.0f} ev/s  {rel['seconds']:6.1f} s  {_others(rel)}")
        if rel.get("clickhouse_events"):
            ce = rel["clickhouse_events"]
            row("   (relay: inserts delayed by ClickHouse / autovacuums)",
                f"{ce['DelayedInserts']:,} of {ce['InsertQuery']:,}, {ce['DelayedInsertsMilliseconds'] / 1000:.1f} s"
                f" / {rel['autovacuum_runs']}")
        r1, r2 = d["ratios"]["pipeline_vs_limit"], d["ratios"]["pipeline_vs_relay"]
        row("   pipeline / limit (the faster)", f"{r1:9.2f}x", f">= {TARGETS['drain_vs_limit']}x", _ok(r1, TARGETS["drain_vs_limit"], at_most=False))
        row("   pipeline / relay", f"{r2:9.2f}x", f">= {TARGETS['drain_vs_relay']}x", _ok(r2, TARGETS["drain_vs_relay"], at_most=False))
        row("   (cdc run start-up + exit, empty backlog)", f"{p['startup_seconds']:9.2f} s")
        if p.get("streaming_events_per_s"):
            row("   (pipeline from 'streaming' to last flush)",
                f"{p['streaming_events_per_s']:>9,.0f} ev/s  {p['streaming_seconds']:6.1f} s")
    s = results.get("steady")
    if s:
        lat = s["latency_s"]
        row(f"2. steady state: {s['offered_per_s']:,.0f} ev/s offered, {s['connections']} connections, "
            f"{s['duration_s']:.0f} s, {s['events_per_txn']:.1f} ev/txn")
        row("   achieved rate", f"{s['achieved_per_s']:>9,.0f} ev/s  {_others(s)}")
        row("   commit->visible p50 / p95", f"{lat['p50']:9.3f} s / {lat['p95']:.3f} s")
        row("   commit->visible p99", f"{lat['p99']:9.3f} s", f"<= {TARGETS['steady_p99_s']} s",
            _ok(lat["p99"], TARGETS["steady_p99_s"], at_most=True))
        row("   commit->visible max", f"{lat['max']:9.3f} s")
        ws = s["latency_windows"]
        trend = f"p50 {ws[0]['p50_s']:.2f}s -> {ws[-1]['p50_s']:.2f}s" if ws else "-"
        row("   kept up (all delivered, lag flat)", f"{'yes' if s['kept_up'] else 'NO':>9}  {trend}", "", "yes" if s["kept_up"] else "NO")
        row("   slot lag max", f"{s['slot_lag_bytes']['max'] / 1024:9,.0f} KiB")
    mem = results.get("memory")
    if mem:
        if mem.get("skipped"):
            row("3. memory: skipped")
        else:
            row("3. memory: peak RSS of cdc run draining a backlog")
            for r in mem["runs"]:
                row(f"   {r['events']:,} events",
                    f"{r['peak_rss_mb']:9.1f} MB  {r['events_per_s']:>7,.0f} ev/s  {_others(r)}", f"<= {TARGETS['rss_mb']:.0f} MB",
                    _ok(r["peak_rss_mb"], TARGETS["rss_mb"], at_most=True))
            if len(mem["runs"]) > 1:
                g = mem["growth_pct"]
                row("   growth smallest -> largest", f"{g:+9.1f} %", f"<= {TARGETS['rss_growth_pct']:.0f} %",
                    _ok(abs(g), TARGETS["rss_growth_pct"], at_most=True))
    if d:
        row("4. WAL bytes per event (source, during the drain)")
        row("   pipeline", f"{d['pipeline']['wal_bytes_per_event']:9.1f} B")
        row("   relay", f"{d['relay']['wal_bytes_per_event']:9.1f} B")
        row("   (writing the backlog itself)", f"{d['backlog']['wal_bytes_per_event']:9.1f} B")
    dd = results.get("dedup")
    if dd and not dd.get("skipped"):
        row("5. dedup window, bytes per remembered id (arrays / RSS)")
        for r in dd["sizes"]:
            row(f"   {r['capacity']:,} ids", f"{r['nbytes_per_id']:6.1f} / {r['rss_per_id']:.1f} B",
                f"<= {TARGETS['dedup_bytes_per_id']:.0f} B", _ok(r["rss_per_id"], TARGETS["dedup_bytes_per_id"], at_most=True))
    if d or s:
        row("6. CPU per event, cdc run process (user+sys)")
        if d:
            p = d["pipeline"]
            n = d["events"]
            for label, side, own in (("pipeline", p, p["cpu_s"]), ("limit", d["limit"], d["limit"]["cpu_s"]),
                                     ("relay", d["relay"], d["relay"]["cpu_s"])):
                servers = side["cpu_elsewhere"]["servers_cpu_s"]
                pg, ch = servers.get("postgres", 0.0), servers.get("clickhouse", 0.0)
                total = (own + pg + ch) / n * 1e6
                row(f"   drain, {label}: client + postgres + clickhouse",
                    f"{own / n * 1e6:5.1f} + {pg / n * 1e6:.1f} + {ch / n * 1e6:.1f} = {total:.1f} us",
                    f"{(os.cpu_count() or 1) / total * 1e6:,.0f} ev/s max on {os.cpu_count()} CPUs")
            row("   drain", f"{p['cpu_us_per_event']:9.1f} us", "", "")
            row("   drain, net of start-up", f"{p['net_cpu_us_per_event']:9.1f} us")
            row("   (relay process, for comparison)", f"{d['relay']['cpu_us_per_event']:9.1f} us")
        if s:
            row("   steady state", f"{s['pipeline']['cpu_us_per_event']:9.1f} us")
    pr = results.get("profile")
    if pr:
        scaled = "cpu_us_per_event_scale" in pr
        row(f"7. profile of a {pr['events']:,}-event drain (py-spy, % of samples; "
            + ("us/event: the drain's CPU shared out by samples)" if scaled else "us/event from sample counts)"))
        for st in pr["stages"]:
            us = st.get("cpu_us_per_event", st.get("us_per_event", 0.0))
            row(f"   {st['name']}", f"{st['pct']:8.1f} %  {us:5.2f} us/event")
    w0 = max(len(r[0]) for r in rows if r[1]) + 2  # section headings may run into the value column
    w1 = max(len(r[1]) for r in rows) + 2
    w2 = max(len(r[2]) for r in rows) + 2
    lines = [head, "", f"{'scenario / measure':<{w0}}{'value':<{w1}}{'target':<{w2}}ok", "-" * (w0 + w1 + w2 + 3)]
    lines += [f"{a:<{w0}}{b:<{w1}}{c:<{w2}}{o}".rstrip() for a, b, c, o in rows]
    return "\n".join(lines)


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

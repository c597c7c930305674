"""What every scenario of the benchmark shares: the log, the pipeline's drain, loading a backlog."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import workload
from .env import (
    CDC, BenchError, Child, CpuMeter, Servers, Target, checked, clickhouse_events, clickhouse_rows, confirmed_lsn,
    connect, delta, format_lsn, settle, wal_lsn,
)

SLOT = "cdc_outbox"
# Two slots for pg_recvlogical: one drains the backlog before the pipeline does, one after.
LIMIT_SLOTS = ("bench_limit_before", "bench_limit_after")
MB = 1024 * 1024


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



def sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip() and s.strip().lower() != "none"]

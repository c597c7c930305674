"""What the metrics endpoint costs: the backlog drain with `--metrics-addr` off and on, side by side.

    python -m bench.metrics_cost                     # 1,000,000 events, 3 rounds of off/on/idle (~6 min on 2 cores)
    python -m bench.metrics_cost --events 200000 --rounds 2 --json metrics.json

Each round drains a fresh backlog once per mode, the order rotated every
round so that a drift of the machine (a neighbour's load, caches) does
not favour one side. "on" serves the endpoint and a scraper reads it every
``--scrape-interval`` seconds (1 s: fifteen times Prometheus's default), so
the whole cost is in: the scrape's reading of the pipeline's counts on the
HTTP thread, and the per-batch histograms on the flusher thread. Heartbeats
stay at cdc's default in both modes. The medians of the modes are compared;
their spread says what a difference means.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

from .env import Servers, snapshot_cdc
from .common import load, log, migrate, pipeline_drain

# "idle" serves the endpoint and nobody reads it: what the server's thread costs on its own.
MODES = ("off", "on", "idle")


class Scraper(threading.Thread):
    """Reads the endpoint every `interval` seconds until stopped, as Prometheus would."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.scrapes = 0
        self.bytes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    self.bytes = len(response.read())
                self.scrapes += 1
            except OSError:
                pass  # not serving yet, or gone
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drain(srv: Servers, args: argparse.Namespace, mode: str, round_: int) -> dict[str, Any]:
    name = f"bench_metrics_{mode}_{round_}"
    t = srv.database(name, args.clickhouse_params)
    try:
        migrate(srv, t)
        load(t, args.events, args.txn_rows)
        extra: list[str] = []
        scraper = None
        if mode != "off":
            port = free_port()
            extra = ["--metrics-addr", f"127.0.0.1:{port}"]
        if mode == "on":
            scraper = Scraper(f"http://127.0.0.1:{port}/metrics", args.scrape_interval)
            scraper.start()
        run_args = argparse.Namespace(cdc_run_args=[*args.cdc_run_args, *extra])
        try:
            result = pipeline_drain(srv, run_args, t, name, expect_rows=args.events, name=f"metrics-{mode}-{round_}")
        finally:
            if scraper is not None:
                scraper.stop()
        summary = {k: result[k] for k in ("seconds", "events_per_s", "streaming_events_per_s", "cpu_us_per_event",
                                          "peak_rss_mb")}
        if scraper is not None:
            summary.update(scrapes=scraper.scrapes, scrape_bytes=scraper.bytes)
        log(f"round {round_} {mode}: {summary['events_per_s']:,.0f} events/s "
            f"({summary['streaming_events_per_s'] or 0:,.0f} while streaming)"
            + (f", {scraper.scrapes} scrapes" if scraper else ""))
        return summary
    finally:
        srv.drop(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--txn-rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrape-interval", type=float, default=1.0,
                        help="seconds between scrapes in 'on' (Prometheus's default is 15)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}, with off")
    parser.add_argument("--pg-kind", default="pg18", choices=["pg18", "pg15"])
    parser.add_argument("--cdc-ref", metavar="REF", help="measure a snapshot of this commit (see bench/README.md)")
    parser.add_argument("--cdc-args", default="", help="extra flags for every `cdc run`")
    parser.add_argument("--clickhouse-params", default="", metavar="QUERY")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.cdc_run_args = shlex.split(args.cdc_args)
    modes = tuple(m.strip() for m in args.modes.split(","))
    if "off" not in modes or not set(modes) <= set(MODES):
        parser.error(f"--modes: 'off' and any of {MODES[1:]}")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    snapshot_dir = None
    srv = None
    try:
        if args.cdc_ref:
            snapshot_dir = Path(tempfile.mkdtemp(prefix="cdc-bench-snapshot-"))
            _, site = snapshot_cdc(args.cdc_ref, snapshot_dir)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        srv = Servers(args.pg_kind)
        for round_ in range(args.rounds):
            # Each mode takes each place in the order in turn.
            shift = round_ % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                runs[mode].append(drain(srv, args, mode, round_))
    finally:
        if srv is not None:
            srv.close()
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)
    result = summarize(runs, args)
    result["cdc_measured"] = srv.cdc if srv is not None else None
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] or 0.0 for r in runs[mode])

    out: dict[str, Any] = {"events": args.events, "rounds": args.rounds, "scrape_interval_s": args.scrape_interval,
                           "runs": runs, "loadavg": os.getloadavg()[0]}
    for mode in runs:
        rates = [r["events_per_s"] for r in runs[mode]]
        out[mode] = {"median_events_per_s": median(mode, "events_per_s"), "min_events_per_s": min(rates),
                     "max_events_per_s": max(rates), "median_cpu_us_per_event": median(mode, "cpu_us_per_event")}
    for mode in runs:
        if mode != "off":
            out[f"{mode}_vs_off"] = out[mode]["median_events_per_s"] / out["off"]["median_events_per_s"]
    return out


def table(r: dict[str, Any]) -> str:
    lines = [f"metrics endpoint cost: {r['events']:,}-event drain, {r['rounds']} rounds, scraped every "
             f"{r['scrape_interval_s']:g} s when on",
             f"{'':6} {'median ev/s':>12} {'range ev/s':>21} {'CPU us/ev':>10}"]
    for mode in MODES:
        if mode not in r:
            continue
        m = r[mode]
        lines.append(f"{mode:6} {m['median_events_per_s']:>12,.0f} "
                     f"{m['min_events_per_s']:>10,.0f}-{m['max_events_per_s']:<10,.0f} {m['median_cpu_us_per_event']:>10.2f}")
    lines += [f"{mode} / off: {r[f'{mode}_vs_off']:.3f}" for mode in MODES[1:] if f"{mode}_vs_off" in r]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

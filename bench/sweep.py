"""The rate sweep: at each offered rate, the writers alone, then the same writers beside ``cdc run``.

    python -m bench.sweep                                  # 5k, 10k, 15k, 20k events/s, 40 s each (~10 min)
    python -m bench.sweep --rates 5000,10000 --duration 30 --json sweep.json

At each rate the steady-state writers (bench/workload.py: transactions of 1..9
events, 5 on average, from one connection per 1,250 events/s, at least 4) run
first alone, on a database of their own with no pipeline, which says what
this machine's writers can reach at all; then beside ``cdc run``, through the
steady scenario (bench/steady.py): commit-to-visible latency, its growth over
the run, the slot's lag, cdc's CPU per event.

The goal: at every rate the writers reach alone (95 % of the offered rate),
cdc keeps up (nothing missing, latency flat) with p99 commit-to-visible at
most the flush interval + 0.35 s. A rate the writers cannot reach alone says
nothing of cdc, and is marked so.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .common import log, migrate
from .env import CpuMeter, Servers
from .steady import run_writers, scenario_steady

FLUSH_INTERVAL_S = 1.0  # cdc's default --flush-interval
P99_MARGIN_S = 0.35


def connections_for(rate: float) -> int:
    return max(4, round(rate / 1250))


def _at(args: argparse.Namespace, rate: float) -> argparse.Namespace:
    """The steady scenario's arguments for one rate of the sweep."""
    return argparse.Namespace(**{**vars(args), "rate": rate, "connections": connections_for(rate)})


def writers_alone(srv: Servers, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """The writers at ``rate`` with no pipeline running: what the machine gives them."""
    db = "bench_sweep_alone"
    t = srv.database(db, args.clickhouse_params)
    try:
        migrate(srv, t)
        with CpuMeter(srv.cpu_groups()) as meter:
            written = run_writers(t.pg_dsn, _at(args, rate), srv.logs / "sweep-alone.pickle")
        return {"achieved_per_s": written["achieved_per_s"], "events": written["events"],
                "cpu_elsewhere": meter.as_dict()}
    finally:
        srv.drop(db)


def point(srv: Servers, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    alone = writers_alone(srv, args, rate)
    log(f"rate {rate:,.0f}: the writers alone reach {alone['achieved_per_s']:,.0f} events/s")
    with_cdc = scenario_steady(srv, _at(args, rate))
    reachable = alone["achieved_per_s"] >= 0.95 * rate
    p99 = with_cdc["latency_s"]["p99"]
    met = with_cdc["kept_up"] and p99 <= FLUSH_INTERVAL_S + P99_MARGIN_S
    log(f"rate {rate:,.0f}: with cdc {with_cdc['achieved_per_s']:,.0f} events/s, p99 {p99:.2f} s, growth "
        f"{with_cdc['latency_growth_s_over_run']:+.2f} s, cdc {with_cdc['pipeline']['cpu_us_per_event']:.1f} us/event"
        f" -> {'met' if met else 'NOT met' if reachable else 'writers cannot reach it alone'}")
    return {"offered_per_s": rate, "connections": connections_for(rate), "alone": alone, "with_cdc": with_cdc,
            "writers_reach_it": reachable, "goal_met": met if reachable else None}


def table(points: list[dict[str, Any]]) -> str:
    head = (f"{'offered':>8} {'alone':>8} {'with cdc':>9} {'p50 s':>6} {'p99 s':>6} {'growth s':>9} "
            f"{'lag max MB':>10} {'cdc us/ev':>9}  goal (p99 <= {FLUSH_INTERVAL_S + P99_MARGIN_S:.2f} s, flat)")
    lines = [head]
    for p in points:
        w = p["with_cdc"]
        goal = {True: "met", False: "NOT met", None: "n/a: writers alone fall short"}[p["goal_met"]]
        lines.append(f"{p['offered_per_s']:>8,.0f} {p['alone']['achieved_per_s']:>8,.0f} {w['achieved_per_s']:>9,.0f} "
                     f"{w['latency_s']['p50']:>6.2f} {w['latency_s']['p99']:>6.2f} "
                     f"{w['latency_growth_s_over_run']:>+9.2f} {w['slot_lag_bytes']['max'] / 1e6:>10.1f} "
                     f"{w['pipeline']['cpu_us_per_event']:>9.1f}  {goal}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,15000,20000", help="offered events/s, comma-separated")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of writing per run")
    parser.add_argument("--max-txn", type=int, default=9, help="events per transaction: uniform 1..N")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="ClickHouse visibility poll (s)")
    parser.add_argument("--pg-kind", default="pg18", choices=["pg18", "pg15"])
    parser.add_argument("--cdc-args", default="", help="extra flags for every `cdc run`")
    parser.add_argument("--clickhouse-params", default="", metavar="QUERY")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    args.cdc_run_args = shlex.split(args.cdc_args)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    srv = Servers(args.pg_kind)
    try:
        points = [point(srv, args, rate) for rate in rates]
    finally:
        srv.close()
    print(table(points))
    if args.json:
        Path(args.json).write_text(json.dumps({"points": points}, indent=2, default=str) + "\n")
    return 0 if all(p["goal_met"] is not False for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())

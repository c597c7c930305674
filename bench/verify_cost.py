"""What ``cdc verify`` costs: its time, and what it reads from each server, for an outbox of N events.

    python -m bench.verify_cost --events 1000000,10000000 [--pg-kind pg18] [--damage 1000] [--cases 1-4] [--json out.json]

For each N, a fresh database pair on the benchmark's own servers (tests/servers),
filled directly rather than through the pipeline (that is minutes, not an hour):

* the outbox: ``INSERT ... SELECT generate_series`` in transactions of 500,000
  rows, the shape bench/workload.py writes (UUID unique_id, 20 event types, a
  ~200-byte payload), but with unique_id = md5(n) as a UUID, so that
* ClickHouse can hold the same events: ``INSERT ... SELECT FROM numbers(N)``
  computing the same ids, at backfill positions (as ``cdc backfill`` would
  have stored them); the ledger fills through its materialized view as usual.

Then the slot is made anew (nothing in flight), and each case is one
``cdc verify --json`` child, timed from start to exit (wall, its CPU, its peak
RSS), with the rows and bytes each server read as verify reports them:

1. clean: everything delivered (exit 0);
2. damaged: ``--damage`` events deleted from ClickHouse (exit 1, all named);
3. repair: ``cdc verify --repair`` delivering exactly those (exit 0);
4. clean again after the repair (exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .env import CDC, BenchError, Child, Servers, Target

_TXN_ROWS = 500_000
_OUTBOX_SQL = """
INSERT INTO outbox (id, unique_id, event_type, occurred_at, environment, payload)
SELECT g, md5(g::text)::uuid::text, 'type_' || mod(g, 20), now() - make_interval(secs => mod(g, 3600)),
       (ARRAY['production','staging','sandbox'])[1 + mod(g, 3)],
       jsonb_build_object('orderId', g, 'customerId', 'cus_' || mod(g * 7919, 1000003),
                          'amount', mod(g * 31, 100000) / 100.0, 'sku', 'SKU-' || lpad(mod(g, 99991)::text, 6, '0'),
                          'channel', (ARRAY['web','ios','android','pos'])[1 + mod(g, 4)], 'traceId', md5(g::text))
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
"""
# The same ids as md5(g::text)::uuid::text, and backfill positions (cdc/core/positions.py).
_UUID_CH = ("concat(substring(h, 1, 8), '-', substring(h, 9, 4), '-', substring(h, 13, 4), '-', "
            "substring(h, 17, 4), '-', substring(h, 21, 12))")
_EVENTS_SQL = f"""
INSERT INTO events (unique_id, event_type, occurred_at, environment, payload, metadata_version, outbox_id,
                    commit_lsn, commit_seq, committed_at, inserted_at)
SELECT {_UUID_CH}, concat('type_', toString(n % 20)), now(), 'production', '{{{{}}}}', 1, n,
       1 + bitShiftRight(n, 32), bitAnd(n, 4294967295), now(), now()
FROM (SELECT number + 1 AS n, lower(hex(MD5(toString(number + 1)))) AS h FROM system.numbers LIMIT {{n}})
"""


def fill(t: Target, n: int) -> dict[str, float]:
    started = time.monotonic()
    with t.pg() as conn:
        for lo in range(1, n + 1, _TXN_ROWS):
            with conn.transaction():
                conn.execute(_OUTBOX_SQL, {"lo": lo, "hi": min(lo + _TXN_ROWS - 1, n)})
        conn.execute("SELECT setval(pg_get_serial_sequence('outbox', 'id'), %s)", (n,))
        conn.execute("VACUUM ANALYZE outbox")
        conn.execute("CHECKPOINT")
    outbox_s = time.monotonic() - started
    started = time.monotonic()
    ch = t.ch()
    ch.execute(_EVENTS_SQL.format(n=int(n)))
    ch.execute("OPTIMIZE TABLE events FINAL")
    if ch.execute("SELECT count() FROM events") != [(n,)]:
        raise BenchError("ClickHouse does not hold the N events just written")
    return {"outbox_seconds": round(outbox_s, 1), "clickhouse_seconds": round(time.monotonic() - started, 1)}


def cdc(t: Target, *args: str) -> None:
    result = t.cdc(*args, timeout=600)
    if result.returncode != 0:
        raise BenchError(f"cdc {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")


def measure(t: Target, logs: Path, name: str, *args: str, expect: int) -> dict[str, Any]:
    log = logs / f"{name}.log"
    load = os.getloadavg()[0]
    child = Child([*CDC, "verify", "--json", *args], env=t.env(), log=log)
    result = child.wait(timeout=3600)
    report = next((json.loads(line) for line in reversed(log.read_text().splitlines())
                   if line.startswith("{") and '"exit_code"' in line and '"event"' not in line), None)
    if result.returncode != expect or report is None:
        raise BenchError(f"{name}: exit {result.returncode}, expected {expect}\n{result.log_tail()}")
    return {
        "case": name, "seconds": round(result.seconds, 2), "cpu_seconds": round(result.cpu_s, 2),
        "peak_rss_mb": round(result.maxrss_bytes / 2**20, 1), "loadavg_1min": round(load, 2),
        "status": report["status"], "missing": report["missing"]["count"], "differing_buckets":
        report["buckets"]["differing"], "read": report["read"], "repair": report.get("repair"),
    }


CASES = ("clean", "damaged", "repair", "clean-again")


def run_size(servers: Servers, n: int, damage: int, logs: Path, cases: tuple[str, ...] = CASES) -> dict[str, Any]:
    """The cases in order; a later case needs the earlier ones' state, so ``cases`` is a prefix of CASES."""
    t = servers.database(f"verify_{n}")
    try:
        cdc(t, "migrate")
        filled = fill(t, n)
        cdc(t, "slot", "drop", "--yes")
        cdc(t, "slot", "create", "--yes")
        done = [measure(t, logs, f"{n}-clean", expect=0)]
        if "damaged" in cases:
            step = max(1, n // damage)
            ch = t.ch()
            ch.execute(f"ALTER TABLE events DELETE WHERE outbox_id % {step} = 0")
            while ch.execute(
                "SELECT count() FROM system.mutations WHERE NOT is_done AND database = currentDatabase()"
            )[0][0]:
                time.sleep(0.5)
            done.append(measure(t, logs, f"{n}-damaged", expect=1))
        if "repair" in cases:
            done.append(measure(t, logs, f"{n}-repair", "--repair", expect=0))
        if "clean-again" in cases:
            done.append(measure(t, logs, f"{n}-clean-again", expect=0))
        return {"events": n, "fill": filled, "cases": done}
    finally:
        servers.drop(f"verify_{n}")


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| events | case | seconds | verify CPU s | peak RSS MB | PostgreSQL read | ClickHouse read | hashes sent "
             "(PG / CH) | result | load |",
             "| ---: | --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: |"]
    for size in results:
        for c in size["cases"]:
            pg, ch = c["read"]["postgres"], c["read"]["clickhouse"]
            result = f"{c['status']}, {c['missing']} missing, {c['differing_buckets']} buckets differ"
            if c["repair"]:
                result += f"; {c['repair']['delivered']} delivered"
            lines.append(
                f"| {size['events']:,} | {c['case'].split('-', 1)[1]} | {c['seconds']} | {c['cpu_seconds']} | "
                f"{c['peak_rss_mb']} | {pg['rows']:,} rows, {pg['bytes'] / 2**20:,.0f} MiB heap "
                f"({pg['passes']} pass{'es' if pg['passes'] > 1 else ''}) | "
                f"{ch['rows']:,} rows, {ch['bytes'] / 2**20:,.0f} MiB | "
                f"{pg['hashes_sent']:,} / {ch['hashes_sent']:,} | {result} | {c['loadavg_1min']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="1000000,10000000", help="comma-separated outbox sizes")
    parser.add_argument("--pg-kind", default="pg18")
    parser.add_argument("--damage", type=int, default=1000, help="events deleted from ClickHouse before 'damaged'")
    parser.add_argument("--cases", type=int, choices=range(1, len(CASES) + 1), default=len(CASES),
                        help="run only the first N cases of: " + ", ".join(CASES))
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    cases = CASES[:args.cases]
    servers = Servers(args.pg_kind)
    try:
        results = [run_size(servers, int(n), args.damage, servers.logs, cases) for n in args.events.split(",")]
    finally:
        servers.close()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"pg_kind": args.pg_kind, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

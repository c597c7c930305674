"""What the benchmark writes into the outbox.

A realistic row: a UUID ``unique_id``, one of 20 event types, a timestamp, one
of three environments and a ~200-byte JSON payload (an order-ish object).

* ``load_backlog``: N rows already committed before a drain is timed, written
  server-side with ``INSERT ... SELECT generate_series`` in transactions of
  ``txn_rows`` rows (a few big transactions, as a backlog after an outage).
* ``python -m bench.workload steady ...``: the steady-state writer, a separate
  process (so its GIL does not delay the latency poller) with one thread per
  connection, each inserting small transactions paced to its share of the
  offered rate. It records each event's commit time (``time.monotonic()``,
  CLOCK_MONOTONIC, comparable across processes) right after COMMIT returns and
  writes them to a pickle file for the parent.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import threading
import time
import uuid
from typing import Any

import psycopg

EVENT_TYPES = (
    "order.created", "order.paid", "order.shipped", "order.delivered", "order.cancelled", "order.refunded",
    "cart.item_added", "cart.item_removed", "cart.checked_out", "user.signed_up", "user.logged_in",
    "user.logged_out", "user.profile_updated", "payment.authorized", "payment.captured", "payment.failed",
    "invoice.issued", "invoice.paid", "shipment.label_created", "review.posted",
)  # fmt: skip
ENVIRONMENTS = ("production", "staging", "sandbox")

# ~200 bytes of jsonb text per row (194-199 as PostgreSQL prints it).
_BACKLOG_SQL = """
INSERT INTO {table} (unique_id, event_type, occurred_at, environment, payload)
SELECT gen_random_uuid()::text,
       (%(types)s::text[])[1 + mod(g, 20)],
       now() - make_interval(secs => mod(g, 3600)),
       (%(envs)s::text[])[1 + mod(g, 3)],
       jsonb_build_object(
           'orderId', g, 'customerId', 'cus_' || mod(g * 7919, 1000003),
           'amount', mod(g * 31, 100000) / 100.0, 'currency', (ARRAY['EUR','USD','GBP'])[1 + mod(g, 3)],
           'sku', 'SKU-' || lpad(mod(g, 99991)::text, 6, '0'), 'quantity', 1 + mod(g, 7),
           'channel', (ARRAY['web','ios','android','pos'])[1 + mod(g, 4)], 'traceId', md5(g::text))
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
"""


def load_backlog(conn: psycopg.Connection[Any], n: int, *, txn_rows: int, table: str = "outbox") -> dict[str, Any]:
    """Insert n rows in ceil(n / txn_rows) committed transactions; returns how long it took."""
    started = time.monotonic()
    transactions = 0
    query = _BACKLOG_SQL.format(table=table)
    for lo in range(1, n + 1, txn_rows):
        hi = min(lo + txn_rows - 1, n)
        with conn.transaction():
            conn.execute(query, {"types": list(EVENT_TYPES), "envs": list(ENVIRONMENTS), "lo": lo, "hi": hi})
        transactions += 1
    return {"rows": n, "transactions": transactions, "rows_per_txn": txn_rows,
            "seconds": time.monotonic() - started}


# -- steady state --------------------------------------------------------------------------------

_PAYLOADS = 997  # distinct payload texts to cycle through, made up front


def _payloads(rng: random.Random) -> list[str]:
    out = []
    for g in range(_PAYLOADS):
        out.append(json.dumps({
            "orderId": rng.randrange(10**9), "customerId": f"cus_{rng.randrange(1_000_003)}",
            "amount": round(rng.random() * 1000, 2), "currency": rng.choice(("EUR", "USD", "GBP")),
            "sku": f"SKU-{rng.randrange(99991):06d}", "quantity": 1 + g % 7,
            "channel": rng.choice(("web", "ios", "android", "pos")), "traceId": f"{rng.getrandbits(128):032x}",
        }))
    return out


def _insert_sql(k: int) -> str:
    rows = ", ".join(["(%s, %s, %s, %s)"] * k)
    return f"INSERT INTO outbox (unique_id, event_type, environment, payload) VALUES {rows}"


class _Writer(threading.Thread):
    def __init__(
        self, dsn: str, worker: int, rate: float, duration: float, max_txn: int, start: threading.Barrier,
        t0: list[float],
    ) -> None:
        super().__init__(name=f"writer-{worker}", daemon=True)
        self.dsn, self.worker, self.rate, self.duration, self.max_txn = dsn, worker, rate, duration, max_txn
        self.start_barrier, self.t0 = start, t0
        self.commits: list[tuple[float, list[str]]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            self.error = exc
            try:
                self.start_barrier.abort()
            except threading.BrokenBarrierError:
                pass

    def _run(self) -> None:
        rng = random.Random(self.worker)
        payloads = _payloads(rng)
        queries = {k: _insert_sql(k) for k in range(1, self.max_txn + 1)}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.start_barrier.wait()
            t0 = self.t0[0]
            end = t0 + self.duration
            produced = 0
            commits = self.commits
            monotonic = time.monotonic
            while True:
                now = monotonic()
                if now >= end:
                    return
                due = self.rate * (now - t0) - produced
                if due < 1:
                    time.sleep(min((1 - due) / self.rate, end - now))
                    continue
                k = rng.randint(1, self.max_txn)
                ids = [str(uuid.uuid4()) for _ in range(k)]
                params: list[str] = []
                for uid in ids:
                    params += (uid, rng.choice(EVENT_TYPES), rng.choice(ENVIRONMENTS), rng.choice(payloads))
                conn.execute(queries[k], params)  # autocommit: one transaction, committed on return
                commits.append((monotonic(), ids))
                produced += k


def steady(dsn: str, *, rate: float, connections: int, duration: float, max_txn: int, out: str) -> dict[str, Any]:
    t0: list[float] = [0.0]
    barrier = threading.Barrier(connections + 1)
    writers = [_Writer(dsn, w, rate / connections, duration, max_txn, barrier, t0) for w in range(connections)]
    for w in writers:
        w.start()
    t0[0] = time.monotonic() + 0.05  # every connection is open: start together
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    for w in writers:
        w.join()
    errors = [repr(w.error) for w in writers if w.error is not None]
    commits = [c for w in writers for c in w.commits]
    commits.sort(key=lambda c: c[0])
    events = sum(len(ids) for _, ids in commits)
    summary = {
        "t0": t0[0], "t_end": max((c[0] for c in commits), default=t0[0]), "events": events,
        "transactions": len(commits), "achieved_per_s": events / duration, "errors": errors,
    }
    with open(out, "wb") as f:
        pickle.dump({**summary, "commits": commits}, f, protocol=pickle.HIGHEST_PROTOCOL)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="steady-state outbox writer (used by bench.run)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steady")
    p.add_argument("--dsn", required=True)
    p.add_argument("--rate", type=float, required=True, help="events per second, all connections together")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--max-txn", type=int, default=9, help="events per transaction: uniform 1..max (mean (1+max)/2)")
    p.add_argument("--out", required=True, help="pickle file for the commit times")
    args = parser.parse_args(argv)
    summary = steady(
        args.dsn, rate=args.rate, connections=args.connections, duration=args.duration, max_txn=args.max_txn,
        out=args.out,
    )
    print(json.dumps(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

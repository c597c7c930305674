"""kill -9 at chosen points, restart, and ClickHouse holds exactly the committed set."""

from __future__ import annotations

import signal

import pytest
from support import Target, checked, insert_events

SMALL_TRANSACTIONS = 300
ROWS_PER_SMALL = 5
BIG_ROWS = 60_000

# Where to die (see cdc/failpoints.py). Batches hold 10,000 rows; the big
# transaction starts after the 1,500 rows of the small ones.
CRASH_POINTS = {
    "mid-batch": "row=700",
    "before-insert": "before_insert=2",
    "mid-insert": "during_insert=2",
    "between-insert-and-ack": "after_insert=2",
    "inside-large-transaction": "row=35000",
}


def _load(t: Target) -> set[str]:
    committed: set[str] = set()
    with t.pg() as conn:
        for n in range(SMALL_TRANSACTIONS):
            ids = [f"s{n}-{r}" for r in range(ROWS_PER_SMALL)]
            rollback = n % 10 == 5
            insert_events(conn, ids, rollback=rollback)
            if not rollback:
                committed.update(ids)
        conn.execute(
            "INSERT INTO outbox (unique_id, event_type, payload) "
            "SELECT 'big-' || g, 'bulk', jsonb_build_object('g', g) FROM generate_series(1, %s) g",
            (BIG_ROWS,),
        )
        committed.update(f"big-{g}" for g in range(1, BIG_ROWS + 1))
        for n in range(50):
            insert_events(conn, [f"tail-{n}"])
            committed.add(f"tail-{n}")
    return committed


@pytest.mark.parametrize("failpoint", CRASH_POINTS.values(), ids=CRASH_POINTS.keys())
def test_restart_after_kill_delivers_exactly_the_committed_rows(pg_dsn: str, clickhouse_url: str, failpoint: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    committed = _load(t)
    until = t.current_lsn()
    # Deduplication off: the high-water mark alone must prevent duplicates (with
    # dedup on, the rebuilt window would hide a broken high-water mark).
    tuning = ("--batch-rows", "10000", "--flush-interval", "0.2", "--dedup-window", "0")

    crashed = t.cdc("run", "--until-lsn", until, *tuning, CDC_FAILPOINTS=failpoint)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert not t.slot_reached(until), "a killed run must not have acknowledged everything"

    checked(t.cdc("run", "--until-lsn", until, *tuning))
    delivered = t.delivered_ids()
    assert len(delivered) == len(committed), "duplicates or losses"
    assert set(delivered) == committed
    assert t.slot_reached(until)

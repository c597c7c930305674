"""kill -9 at chosen points, restart, and ClickHouse holds exactly the committed set.

For the chDB sink the kill also takes down its ClickHouse, mid-INSERT included:
the restarted run must find the directory usable and its high-water mark true.

Each point also checks the order of acknowledgement directly: after the kill,
the slot's confirmed position must not pass the commit of any transaction
ClickHouse does not hold whole (an acknowledgement of something merely received
loses it). Which transactions committed where comes from PostgreSQL itself (a
test_decoding slot), so even rows lost for good are seen.
"""

from __future__ import annotations

import signal

import pytest
from support import CommitReferee, Target, checked, insert_events, parse_lsn_text, slot_released

# Small transactions of 7 rows: batches of 10,000 rows end inside a transaction,
# so a restart must skip the stored part of one by its position. Every tenth
# rolls back. 4,410 commit: rows 1-30,870 of the stream.
SMALL_TRANSACTIONS = 4_900
ROWS_PER_SMALL = 7
COMMITTED_SMALL_ROWS = (SMALL_TRANSACTIONS - SMALL_TRANSACTIONS // 10) * ROWS_PER_SMALL
BIG_ROWS = 60_000
BATCH_ROWS = 10_000

# Where to die (see cdc/failpoints.py). Every point but the last dies while
# committed transactions are received and not yet stored, so an acknowledgement
# sent on receipt shows in the slot's position.
CRASH_POINTS = {
    "mid-batch": "row=5000",
    "before-insert": "before_insert=2",
    "mid-insert": "during_insert=2",
    "between-insert-and-ack": "after_insert=2",
    # Row 35,000 is inside the big transaction, in the batch that also holds the
    # last small ones (rows 30,001-30,870).
    "inside-large-transaction": "row=35000",
    # Batches 4 and 5 hold the big transaction's first 19,130 rows: stored, not
    # acknowledged. Nothing committed is pending here, so this point checks the
    # restart inside a half-stored transaction, not the acknowledgement order.
    "large-transaction-partly-stored": "after_insert=5",
}


def _load(t: Target) -> set[str]:
    with t.pg() as conn:
        # One statement, thousands of transactions (COMMIT/ROLLBACK inside DO):
        # a loop of client round trips would cost more than the test itself.
        conn.execute(f"""
            DO $$
            BEGIN
                FOR n IN 0..{SMALL_TRANSACTIONS - 1} LOOP
                    INSERT INTO outbox (unique_id, event_type, environment, payload)
                    SELECT 's' || n || '-' || r, 'test', 'test', jsonb_build_object('n', n, 'r', r)
                    FROM generate_series(0, {ROWS_PER_SMALL - 1}) r;
                    IF n % 10 = 5 THEN ROLLBACK; ELSE COMMIT; END IF;
                END LOOP;
            END $$""")
        conn.execute(
            "INSERT INTO outbox (unique_id, event_type, payload) "
            "SELECT 'big-' || g, 'bulk', jsonb_build_object('g', g) FROM generate_series(1, %s) g",
            (BIG_ROWS,),
        )
        for n in range(50):
            insert_events(conn, [f"tail-{n}"])
    committed = {f"s{n}-{r}" for n in range(SMALL_TRANSACTIONS) if n % 10 != 5 for r in range(ROWS_PER_SMALL)}
    committed.update(f"big-{g}" for g in range(1, BIG_ROWS + 1))
    committed.update(f"tail-{n}" for n in range(50))
    assert len(committed) == COMMITTED_SMALL_ROWS + BIG_ROWS + 50
    return committed


# The chDB sink dies with the process: its variants are the points where the kill finds its INSERT in
# progress, done but unacknowledged, or done for half a transaction. The others kill before the sink is
# reached, which no sink changes.
CHDB_POINTS = ("mid-insert", "between-insert-and-ack", "large-transaction-partly-stored")
CASES = [
    pytest.param(failpoint, kind, id=f"{kind}-{name}")
    for kind in ("clickhouse", "chdb")
    for name, failpoint in CRASH_POINTS.items()
    if kind == "clickhouse" or name in CHDB_POINTS
]


@pytest.mark.single_slot("the failpoint loop kills one pipeline at each failpoint; tests/workers kill -9 sharded workers")
@pytest.mark.parametrize(("failpoint", "sink_url"), CASES, indirect=["sink_url"])
def test_restart_after_kill_delivers_exactly_the_committed_rows(pg_dsn: str, sink_url: str, failpoint: str) -> None:
    t = Target(pg_dsn, sink_url)
    checked(t.cdc("migrate"))
    referee = CommitReferee(t)
    try:
        committed = _load(t)
        until = t.current_lsn()
        # Deduplication off: the high-water mark alone must prevent duplicates (with
        # dedup on, the rebuilt window would hide a broken high-water mark). Batches
        # are sealed by their row count only, so each point lands where it says.
        tuning = ("--batch-rows", str(BATCH_ROWS), "--flush-interval", "3600", "--dedup-window", "0")

        crashed = t.cdc("run", "--until-lsn", until, *tuning, CDC_FAILPOINTS=failpoint)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
        assert not t.slot_reached(until), "a killed run must not have acknowledged everything"
        # The dead run's last status updates may still be in the walsender's socket.
        slot_released(t)
        confirmed = t.confirmed_lsn()
        assert confirmed is not None
        # First the cause (an acknowledgement ahead of storage), then its consequence (rows lost).
        ahead = referee.acknowledged_unstored(parse_lsn_text(confirmed), set(t.delivered_ids()))
        assert not ahead, f"the killed run acknowledged what ClickHouse did not hold: {ahead[:3]}"
    finally:
        referee.drop()

    checked(t.cdc("run", "--until-lsn", until, *tuning))
    delivered = t.delivered_ids()
    assert len(delivered) == len(committed), "duplicates or losses"
    assert set(delivered) == committed
    assert t.slot_reached(until)

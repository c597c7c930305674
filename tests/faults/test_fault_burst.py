"""A burst far larger than the buffer passes through in bounded memory.

300,000 rows of ~1 kB (one 200,000-row transaction, then a thousand-row
transaction every few milliseconds) against a 5,000-row / 2 MB buffer: about
300 MB of payload, more than the whole process may use. The pipeline's memory
must not follow the backlog. The memory figure does not depend on the
PostgreSQL version: single_pg.
"""

from __future__ import annotations

import pytest
from fault_support import CdcProcess, assert_exactly, catch_up, report
from support import Target

RSS_LIMIT_MB = 300
PAYLOAD = 1000
BIG_TRANSACTION = 200_000
SMALL_TRANSACTIONS = 100
SMALL_ROWS = 1_000
INSERT = (
    "INSERT INTO outbox (unique_id, event_type, payload) "
    "SELECT %s || g, 'burst', jsonb_build_object('g', g, 'pad', repeat('b', %s)) FROM generate_series(1, %s) g"
)


@pytest.mark.single_pg
def test_burst_far_larger_than_the_buffer_passes_in_bounded_memory(migrated: Target) -> None:
    t = migrated
    run = CdcProcess(t, "run", "--batch-rows", "5000", "--batch-bytes", "2000000", "--flush-interval", "0.5")
    try:
        run.wait_for("streaming")
        with t.pg() as conn:
            conn.execute(INSERT, ("big-", PAYLOAD, BIG_TRANSACTION))
            for n in range(SMALL_TRANSACTIONS):
                conn.execute(INSERT, (f"small-{n}-", PAYLOAD, SMALL_ROWS))
        catch_up(t, timeout=240)
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    expected = [f"big-{g}" for g in range(1, BIG_TRANSACTION + 1)]
    expected += [f"small-{n}-{g}" for n in range(SMALL_TRANSACTIONS) for g in range(1, SMALL_ROWS + 1)]
    checked_rows = assert_exactly(t, expected)
    flushes = run.events("flushed")
    assert max(int(f["rows"]) for f in flushes) <= 5000  # type: ignore[call-overload]
    assert run.peak_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.peak_rss_mb:.0f} MB"
    report(
        "burst", rows=checked_rows, payload_mb=round(checked_rows * PAYLOAD / 2**20), batches=len(flushes),
        peak_rss_mb=round(run.peak_rss_mb, 1),
    )

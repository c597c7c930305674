"""Every flush logs what it stored and what that let cdc acknowledge: rows, bytes, seconds, ack_lsn."""

from __future__ import annotations

import pytest
import orjson
from support import Target, checked, insert_events, parse_lsn_text, stored_positions

TRANSACTIONS = 6
ROWS = 40
BATCH_ROWS = 50


@pytest.mark.single_slot("one flush log; each shard logs its own acknowledgements")
def test_every_flush_logs_rows_bytes_seconds_and_the_acknowledged_lsn(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        for n in range(TRANSACTIONS):
            insert_events(conn, [f"f{n}-{r}" for r in range(ROWS)])
    result = checked(t.cdc("run", "--until-lsn", "current", "--batch-rows", str(BATCH_ROWS), "--flush-interval", "0.1"))

    records = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    flushes = [r for r in records if r["event"] == "flushed"]
    assert len(flushes) >= TRANSACTIONS * ROWS // BATCH_ROWS, flushes
    for flush in flushes:
        assert isinstance(flush["rows"], int) and 0 < flush["rows"] <= BATCH_ROWS, flush
        # Each row's payload ('{"uid": "fN-R"}') is at least 14 bytes.
        assert isinstance(flush["bytes"], int) and flush["bytes"] >= 14 * flush["rows"], flush
        assert isinstance(flush["seconds"], float) and flush["seconds"] >= 0, flush
        parse_lsn_text(flush["ack_lsn"])
    assert sum(f["rows"] for f in flushes) == TRANSACTIONS * ROWS == len(t.delivered_ids())

    acks = [parse_lsn_text(f["ack_lsn"]) for f in flushes]
    assert acks == sorted(acks), "the acknowledged position went backwards"
    confirmed = t.confirmed_lsn()
    assert confirmed is not None and acks[-1] <= parse_lsn_text(confirmed)
    # After the last flush every transaction is stored, and acknowledged past its commit.
    newest_commit = stored_positions(t)[-1][0]
    assert acks[-1] > newest_commit
    # A flush in the middle of a transaction acknowledges only the transactions before it.
    firsts = sorted({lsn for lsn, _, _ in stored_positions(t)})
    assert acks[0] <= firsts[1], "the first flush acknowledged a transaction it had not stored whole"

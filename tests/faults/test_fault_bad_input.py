"""Rows ClickHouse cannot take go to the dead-letter table, with why and where, and the stream goes on."""

from __future__ import annotations

import orjson
import pytest
from fault_support import CdcProcess, assert_exactly, catch_up
from support import Target, insert_events

MAX_PAYLOAD = 2000
INSERT = "INSERT INTO outbox (unique_id, event_type, payload, occurred_at) VALUES (%s, 'bad', %s, %s)"

# name -> (unique_id, payload, occurred_at, what the reason must say)
BAD_ROWS: dict[str, tuple[str | None, str, str, str]] = {
    "null-unique-id": (None, "{}", "2024-01-01", "unique_id is NULL"),
    "empty-unique-id": ("", "{}", "2024-01-01", "unique_id is empty"),
    "oversized-payload": ("bad-payload", orjson.dumps({"pad": "x" * MAX_PAYLOAD}).decode(), "2024-01-01",
                          f"over the limit of {MAX_PAYLOAD}"),
    "before-1970": ("bad-1900", "{}", "1900-01-01 00:00:00+00", "outside what ClickHouse can store"),
    "after-2105": ("bad-2200", "{}", "2200-01-01 00:00:00+00", "outside what ClickHouse can store"),
    "infinity": ("bad-infinity", "{}", "infinity", "is not a timestamp ClickHouse can store"),
    "before-christ": ("bad-bc", "{}", "0044-03-15 00:00:00+00 BC", "is not a timestamp ClickHouse can store"),
}
# The edges of ClickHouse 18.16's DateTime are still storable.
EDGE_ROWS = {"edge-1970": "1970-01-01 00:00:00+00", "edge-2105": "2105-12-31 23:59:59+00"}


def _lsn(conn: object) -> int:
    text = str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[attr-defined]
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@pytest.mark.single_slot("a row's position counts one slot's rows of its transaction; a shard sees only its own")
def test_bad_rows_are_dead_lettered_with_reason_and_lsn_and_the_stream_goes_on(migrated: Target) -> None:
    t = migrated
    with t.pg() as conn:
        # The outbox forbids NULL unique_ids; a table someone else made might not.
        conn.execute("ALTER TABLE outbox ALTER COLUMN unique_id DROP NOT NULL")
    run = CdcProcess(t, "run", "--max-payload-bytes", str(MAX_PAYLOAD), "--flush-interval", "0.2")
    good: list[str] = []
    windows: dict[str, tuple[int, int]] = {}
    try:
        run.wait_for("streaming")
        with t.pg() as conn:
            for name, (uid, payload, occurred_at, _) in BAD_ROWS.items():
                insert_events(conn, [f"good-before-{name}"])
                good.append(f"good-before-{name}")
                before = _lsn(conn)
                conn.execute(INSERT, (uid, payload, occurred_at))
                windows[name] = (before, _lsn(conn))
            for uid, occurred_at in EDGE_ROWS.items():
                conn.execute(INSERT, (uid, "{}", occurred_at))
                good.append(uid)
            # Bad and good rows in one transaction: only the bad one is set aside.
            with conn.transaction():
                conn.execute(INSERT, ("mixed-good-1", "{}", "2024-01-01"))
                conn.execute(INSERT, ("mixed-bad", "{}", "1969-12-31 23:59:59+00"))
                conn.execute(INSERT, ("mixed-good-2", "{}", "2024-01-01"))
            good += ["mixed-good-1", "mixed-good-2"]
            insert_events(conn, ["good-last"])
            good.append("good-last")
        catch_up(t)
    finally:
        code = run.stop()
    assert code == 0, run.tail()

    assert_exactly(t, good)
    letters = t.ch().execute("SELECT commit_lsn, commit_seq, relation, reason, row_json FROM events_dead_letter")
    assert len(letters) == len(BAD_ROWS) + 1, letters
    by_id = {orjson.loads(row_json)["unique_id"]: (lsn, seq, rel, reason) for lsn, seq, rel, reason, row_json in letters}
    for name, (uid, _, _, says) in BAD_ROWS.items():
        lsn, seq, relation, reason = by_id[uid]
        assert says in reason, (name, reason)
        low, high = windows[name]
        assert low < lsn <= high, f"{name}: commit_lsn {lsn} is not that of its transaction ({low}..{high}]"
        assert seq == 0 and relation == "public.outbox"
    assert by_id["mixed-bad"][1] == 1, "the position inside its transaction"

    # Counted in the logs: one warning each, and the totals at the end.
    warnings = run.events("row dead-lettered")
    assert len(warnings) == len(BAD_ROWS) + 1
    assert all(w["reason"] and w["commit_lsn"] for w in warnings)
    assert run.events("stopped")[-1]["dead_letters"] == len(BAD_ROWS) + 1
    assert run.events("done")[-1]["dead_letters"] == len(BAD_ROWS) + 1

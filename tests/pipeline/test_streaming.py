"""Streamed in-progress transactions (protocol 2+): held until commit, dropped on abort, spilled past a budget."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from support import Target, checked, insert_events, stop, wait_until


def _bulk(conn: psycopg.Connection[tuple[object, ...]], prefix: str, rows: int) -> None:
    conn.execute(
        "INSERT INTO outbox (unique_id, event_type, payload) "
        "SELECT %s || g, 'bulk', jsonb_build_object('pad', repeat('s', 100)) FROM generate_series(1, %s) g",
        (prefix, rows),
    )


def test_streamed_transactions_deliver_committed_rows_only(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        # Tiny decoding memory makes the server stream every sizeable transaction;
        # a database-level setting reaches our walsender and no other test.
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET logical_decoding_work_mem = \'64kB\'')
    proc = t.start("run", "--streaming", "--spill-bytes", "200000", "--flush-interval", "0.2")
    try:
        with psycopg.connect(t.pg_dsn) as conn:
            _bulk(conn, "committed-", 20_000)
            conn.commit()
            _bulk(conn, "aborted-", 20_000)
            conn.rollback()
            _bulk(conn, "outer-", 5_000)
            conn.execute("SAVEPOINT s")
            _bulk(conn, "rolled-back-sub-", 5_000)
            conn.execute("ROLLBACK TO SAVEPOINT s")
            _bulk(conn, "after-sub-", 5_000)
            conn.commit()
        with t.pg() as conn:
            insert_events(conn, ["small-1", "small-2"])
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 120, "the slot to acknowledge everything")
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    delivered = t.delivered_ids()
    expected = (
        {f"committed-{g}" for g in range(1, 20_001)}
        | {f"outer-{g}" for g in range(1, 5_001)}
        | {f"after-sub-{g}" for g in range(1, 5_001)}
        | {"small-1", "small-2"}
    )
    assert len(delivered) == len(expected)
    assert set(delivered) == expected
    with t.pg() as conn:
        streamed = conn.execute(
            "SELECT sum(stream_txns) FROM pg_stat_replication_slots WHERE slot_name ~ '^cdc_outbox(_[0-9]+)?$'"
        ).fetchone()
    assert streamed is not None and streamed[0] >= 2, "the server did not stream: the test proved nothing"


def _spill_files(pid: int, directory: Path) -> list[str]:
    """The spill files ``pid`` holds open in ``directory`` (unlinked at once: only the descriptor shows them)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(f"{directory}/cdc-stream-"):
            found.append(target)
    return found


@pytest.mark.single_slot("needs one slot's share of a transaction over --spill-bytes; split four ways it stays under")
def test_an_open_transaction_over_spill_bytes_waits_in_a_temporary_file(
    pg_dsn: str, clickhouse_url: str, tmp_path: Path
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET logical_decoding_work_mem = \'64kB\'')
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    proc = t.start("run", "--streaming", "--spill-bytes", "100000", "--flush-interval", "0.2", TMPDIR=str(spill_dir))
    try:
        wait_until(lambda: t.slot_active(), 60, "cdc to start streaming")
        with psycopg.connect(t.pg_dsn) as conn:
            _bulk(conn, "spilled-", 20_000)
            # Still open: the server streams it, and cdc holds its ~3 MB past the 100 kB budget in TMPDIR.
            wait_until(lambda: bool(_spill_files(proc.pid, spill_dir)), 60, "cdc to spill the open transaction")
            assert not t.delivered_ids(), "rows of an open transaction were delivered"
            conn.commit()
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 120, "the slot to acknowledge the transaction")
        # Delivered from the file, which is closed with the transaction: nothing is left behind.
        assert not _spill_files(proc.pid, spill_dir)
        assert list(spill_dir.iterdir()) == []
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    assert sorted(t.delivered_ids()) == sorted(f"spilled-{g}" for g in range(1, 20_001))

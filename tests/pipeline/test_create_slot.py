"""`cdc run --create-slot`: rows already in the outbox first, from the slot's snapshot, then the stream."""

from __future__ import annotations

import json
import signal
import threading

import pytest
from servers import PgServer
from support import Target, checked, insert_events, stop, wait_until


def _drop_slot_and_fill(t: Target, rows: int) -> set[str]:
    ids = {f"old-{i}" for i in range(rows)}
    with t.pg() as conn:
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
        ordered = sorted(ids)
        for start in range(0, rows, 1000):
            insert_events(conn, ordered[start:start + 1000])
    return ids


@pytest.mark.single_slot("`cdc run --create-slot` makes the one slot; sharded slots are made by migrate and reshard")
def test_existing_rows_then_new_ones_arrive_with_no_gap_and_no_overlap(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    expected = _drop_slot_and_fill(t, 5_000)
    done = threading.Event()
    written: list[str] = []

    def keep_writing() -> None:  # commits land before, during and after the slot's creation
        with t.pg() as conn:
            n = 0
            while not done.is_set():
                insert_events(conn, [f"new-{n}"])
                written.append(f"new-{n}")
                n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    proc = t.start("run", "--create-slot", "--flush-interval", "0.2")
    try:
        wait_until(lambda: t.confirmed_lsn() is not None and len(written) > 200, 60, "the slot and some new rows")
        done.set()
        writer.join()
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 60, "everything acknowledged")
    finally:
        done.set()
        code, err = stop(proc)
    assert code == 0, err[-3000:]
    delivered = t.delivered_ids()
    expected |= set(written)
    assert len(delivered) == len(expected), "a row was lost or delivered twice"
    assert set(delivered) == expected


@pytest.mark.single_slot("`cdc run --create-slot` makes the one slot; sharded slots are made by migrate and reshard")
def test_an_interrupted_first_copy_is_refused_then_redone_without_duplicates(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    expected = _drop_slot_and_fill(t, 30_000)
    killed = t.cdc("run", "--create-slot", "--batch-rows", "5000", CDC_FAILPOINTS="after_insert=2")
    assert killed.returncode == -signal.SIGKILL
    assert 0 < len(t.delivered_ids()) < len(expected)

    refused = t.cdc("run", "--until-lsn", "current")
    assert refused.returncode == 1
    assert "was interrupted" in refused.stderr and "--create-slot" in refused.stderr

    checked(t.cdc("run", "--create-slot", "--until-lsn", "current", "--batch-rows", "5000"))
    delivered = t.delivered_ids()
    assert set(delivered) == expected
    assert len(delivered) == len(expected), "rows copied before the crash were copied again"


@pytest.mark.single_slot("`cdc run --create-slot` makes the one slot; sharded slots are made by migrate and reshard")
def test_a_new_slot_after_a_lost_one_copies_only_what_clickhouse_lacks(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    kept = {f"kept-{i}" for i in range(3_000)}
    with t.pg() as conn:
        insert_events(conn, sorted(kept))
    checked(t.cdc("run", "--until-lsn", "current"))
    gap = _drop_slot_and_fill(t, 300)  # committed while there was no slot
    ch = t.ch()
    ch.execute("ALTER TABLE events DELETE WHERE unique_id IN ('kept-5', 'kept-2999')")  # and two lost meanwhile
    wait_until(lambda: ch.execute("SELECT count() FROM events WHERE unique_id = 'kept-5'") == [(0,)], 60, "the delete")

    run = checked(t.cdc("run", "--create-slot", "--until-lsn", "current"))
    copied = [json.loads(line) for line in run.stderr.splitlines() if '"snapshot delivered"' in line]
    assert [line["rows"] for line in copied] == [302]
    delivered = t.delivered_ids()
    assert len(delivered) == len(kept) + 302  # the ledger: every insert, the first run's and the copy's
    assert set(delivered) == kept | gap
    assert ch.execute("SELECT count(), uniqExact(unique_id) FROM events") == [(3_300, 3_300)]


def _slot_failover(t: Target) -> object:
    with t.pg() as conn:
        row = conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'").fetchone()
    assert row is not None, "no slot"
    return row[0]


@pytest.mark.single_slot("`cdc run --create-slot` makes the one slot; sharded slots are made by migrate and reshard")
def test_the_slot_run_creates_is_a_failover_slot_like_migrates(
    pg_dsn: str, clickhouse_url: str, pg_server: PgServer
) -> None:
    """`cdc run --create-slot` is the runbook's step after a promotion on 16 and older, and the first run
    where migrate left the slot to it: the slot it makes must follow migrate's default."""
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    _drop_slot_and_fill(t, 10)
    if pg_server.major < 17:
        refused = t.cdc("run", "--create-slot", "--failover", "--until-lsn", "current")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1].startswith("cdc: error: failover slots need PostgreSQL 17")
        assert t.confirmed_lsn() is None
        checked(t.cdc("run", "--create-slot", "--until-lsn", "current"))
        assert t.delivered_ids().count("old-3") == 1
        return
    checked(t.cdc("run", "--create-slot", "--until-lsn", "current"))
    assert _slot_failover(t) is True
    with t.pg() as conn:
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
    checked(t.cdc("run", "--create-slot", "--no-failover", "--until-lsn", "current"))
    assert _slot_failover(t) is False
    assert t.delivered_ids().count("old-3") == 1  # the second copy found every row already stored

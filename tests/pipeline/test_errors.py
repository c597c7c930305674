"""Errors a user can cause at run time: one line that says what to do, exit 1, nothing unstored acknowledged."""

from __future__ import annotations

import pytest
import psycopg
from support import Target, checked, insert_events, stop, wait_until


def _last_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("cdc: error: "), stderr[-3000:]
    return lines[-1]


@pytest.mark.single_slot("compares the one slot's position exactly; tests/workers checks the shard that holds the row")
def test_a_value_its_clickhouse_column_cannot_hold_ends_the_run_in_one_line(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    # Someone narrowed a column on the ClickHouse side: 1000 no longer fits.
    t.ch().execute("ALTER TABLE events MODIFY COLUMN metadata_version Int8")
    with t.pg() as conn:
        insert_events(conn, ["fits"])
        conn.execute(
            "INSERT INTO outbox (unique_id, event_type, metadata_version) VALUES ('too-big', 'test', 1000)"
        )
    before = t.confirmed_lsn()
    result = t.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1", "--retry-max", "0.2")
    assert result.returncode == 1, result.stderr[-3000:]
    line = _last_line(result.stderr)
    assert "metadata_version" in line and "widen that column" in line, line
    assert t.confirmed_lsn() == before, "acknowledged a batch that was not stored"

    # Doing what it says works: the same rows go in, once.
    t.ch().execute("ALTER TABLE events MODIFY COLUMN metadata_version Int32")
    checked(t.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1"))
    assert sorted(t.delivered_ids()) == ["fits", "too-big"]


@pytest.mark.single_slot("drops the one slot, cdc_outbox")
def test_a_slot_dropped_while_running_stops_the_run_with_how_to_recover(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        insert_events(conn, ["before"])
    # A long wait before reconnecting: time to drop the slot in between.
    proc = t.start("run", "--flush-interval", "0.1", "--retry-initial", "3", "--retry-max", "3")
    try:
        wait_until(lambda: len(t.delivered_ids()) == 1, 60, "the first row to be delivered")
        wait_until(lambda: _drop_slot(t), 30, "the slot to be dropped")
        with t.pg() as conn:
            insert_events(conn, ["while-missing"])
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop(proc)
    assert proc.returncode == 1, err[-3000:]
    line = _last_line(err)
    assert "replication slot cdc_outbox disappeared" in line and "`cdc run --create-slot`" in line, line

    # Doing what it says delivers the row written while the slot was missing, and nothing twice.
    checked(t.cdc("run", "--create-slot", "--until-lsn", "current", "--flush-interval", "0.1"))
    assert sorted(t.delivered_ids()) == ["before", "while-missing"]


def _drop_slot(t: Target) -> bool:
    """End our walsender and drop the slot; False while the walsender still holds it."""
    with t.pg() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'cdc_outbox' AND active"
        )
        try:
            conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
        except psycopg.errors.ObjectInUse:
            return False
    return True

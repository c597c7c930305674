"""Faults around the replication slot: invalidated by the server, or wanted by two pipelines at once."""

from __future__ import annotations

import json
import subprocess

import pytest
from fault_support import CdcProcess, assert_exactly, catch_up, drain, slot_pid, walsender_pid
from servers import PgServer
from support import Target, insert_events, wait_until


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cdc: error: "), line
    return line


def _wal_status(t: Target) -> str | None:
    with t.pg() as conn:
        row = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'").fetchone()
    return None if row is None else row[0]  # type: ignore[return-value]


def _lose_the_slot(t: Target) -> None:
    """Write WAL past max_slot_wal_keep_size while nobody reads the slot, until a checkpoint drops it."""
    with t.pg() as conn:
        conn.execute("CREATE TABLE filler (x text)")
        for _ in range(30):
            conn.execute("INSERT INTO filler SELECT repeat(md5(g::text), 64) FROM generate_series(1, 1500) g")
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            if _wal_status(t) == "lost":
                return
    raise AssertionError(f"the slot is still {_wal_status(t)!r} after writing 30 WAL segments")


@pytest.mark.single_slot("invalidates the one slot, cdc_outbox")
def test_lost_slot_stops_with_how_to_recover(migrated: Target, pg_server: PgServer) -> None:
    t = migrated
    with t.pg() as conn:
        insert_events(conn, ["before-1", "before-2"])
    drain(t)
    # Server-wide: reset in `finally`, the server is shared by the whole session.
    pg_server.set_config(max_slot_wal_keep_size="1MB")
    try:
        with t.pg() as conn:
            insert_events(conn, ["in-the-gap"])
        _lose_the_slot(t)
    finally:
        pg_server.set_config(max_slot_wal_keep_size=None)
    with t.pg() as conn:
        insert_events(conn, ["after-loss"])
    before = t.confirmed_lsn()

    line = _error_line(t.cdc("run", "--until-lsn", "current", timeout=60))
    assert "replication slot cdc_outbox has been invalidated" in line, line
    assert "max_slot_wal_keep_size" in line and "--create-slot" in line and "delivers the gap" in line, line
    assert t.confirmed_lsn() == before
    assert_exactly(t, ["before-1", "before-2"])

    # The way back the message describes: drop the slot; a new one delivers the gap, and only the gap.
    _ok(t.cdc("slot", "drop", "--yes", timeout=60))
    report = json.loads(t.cdc("verify", "--json", timeout=120).stdout)
    assert {r["unique_id"] for r in report["missing"]["first"]} == {"in-the-gap", "after-loss"}
    created = drain(t, "--create-slot", timeout=120)
    assert [json.loads(x)["rows"] for x in created.stderr.splitlines() if '"snapshot delivered"' in x] == [2]
    with t.pg() as conn:
        insert_events(conn, ["after-new-slot"])
    drain(t)
    assert_exactly(t, ["before-1", "before-2", "in-the-gap", "after-loss", "after-new-slot"])
    assert t.cdc("verify", timeout=120).returncode == 0


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"


@pytest.mark.single_slot("two runs on one slot; sharded, a second run joins the group (tests/workers)")
def test_second_pipeline_on_the_same_slot_is_refused_and_the_first_keeps_going(migrated: Target) -> None:
    t = migrated
    first = CdcProcess(t, "run", "--flush-interval", "0.2")
    committed: list[str] = []
    try:
        holder = walsender_pid(t)
        second = t.cdc("run", timeout=60)
        line = _error_line(second)
        assert "replication slot cdc_outbox is in use by process" in line, line
        assert "another --slot" in line, line
        assert slot_pid(t) == holder, "the refused run disturbed the first one's walsender"
        with t.pg() as conn:
            for n in range(10):
                insert_events(conn, [f"after-refusal-{n}"])
                committed.append(f"after-refusal-{n}")
        catch_up(t)
        assert first.proc.poll() is None
    finally:
        code = first.stop()
    assert code == 0, first.tail()
    assert_exactly(t, committed)


@pytest.mark.single_slot("two runs on one slot; sharded, a second run joins the group (tests/workers)")
def test_two_pipelines_started_together_one_wins_one_fails_clearly(migrated: Target) -> None:
    t = migrated
    for attempt in range(2):
        runs = [CdcProcess(t, "run", "--flush-interval", "0.2") for _ in range(2)]
        try:
            wait_until(lambda: any(r.proc.poll() is not None for r in runs), 60, "one of the two runs to give up")
            loser = next(r for r in runs if r.proc.poll() is not None)
            winner = next(r for r in runs if r is not loser)
            assert loser.wait() == 1, loser.tail()
            line = loser.stderr_lines[-1]
            assert line.startswith("cdc: error: replication slot cdc_outbox is in use by"), line
            with t.pg() as conn:
                insert_events(conn, [f"race-{attempt}"])
            catch_up(t)
            assert winner.proc.poll() is None, winner.tail()
        finally:
            for run in runs:
                if run.proc.poll() is None:
                    assert run.stop() == 0, run.tail()
    assert_exactly(t, [f"race-{attempt}" for attempt in range(2)])

"""``cdc slot``: list every slot, create, drop (refusing an active one), advance (never backward)."""

from __future__ import annotations

import json

import pytest
from servers import PgServer
from support import Target, stop, wait_until

from admin_support import Cli, ok, refused


@pytest.mark.single_slot("the one slot, cdc_outbox, by name; tests/workers/test_sharded_admin.py lists the shards'")
def test_list_shows_every_logical_slot_with_lag_and_marks_ours(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('someone_elses', 'test_decoding')")
        conn.execute("CREATE TABLE filler AS SELECT g FROM generate_series(1, 1000) g")
    try:
        data = json.loads(ok(run("slot", "list", "--json")).stdout)
        by_name = {s["name"]: s for s in data}
        assert {"cdc_outbox", "someone_elses"} <= by_name.keys()
        ours, theirs = by_name["cdc_outbox"], by_name["someone_elses"]
        assert ours["ours"] and not theirs["ours"]
        assert theirs["plugin"] == "test_decoding" and theirs["last_ack"] is None
        assert ours["plugin"] == "pgoutput" and ours["active"] is False
        assert ours["lag_bytes"] > 0 and ours["confirmed_flush_lsn"]
        assert ours["last_ack"]["age_seconds"] is None and "unknown" in ours["last_ack"]["source"]
        human = ok(run("slot", "list")).stdout
        assert "* cdc_outbox" in human and "someone_elses" in human and "unknown" in human
    finally:
        with migrated.pg() as conn:
            conn.execute("SELECT pg_drop_replication_slot('someone_elses')")


def test_create_and_drop_with_yes(migrated: Target, run: Cli) -> None:
    created = json.loads(ok(run("slot", "create", "extra_slot", "--yes", "--json")).stdout)
    assert created["slot"] == "extra_slot" and "/" in created["lsn"]
    refused(run("slot", "create", "extra_slot", "--yes"), "already exists")
    ok(run("slot", "drop", "extra_slot", "--yes"))
    assert migrated.confirmed_lsn("extra_slot") is None
    refused(run("slot", "drop", "extra_slot", "--yes"), "does not exist")


@pytest.mark.single_slot("drops the default slot, which a sharded outbox does not have")
def test_off_a_terminal_without_yes_nothing_happens(migrated: Target, run: Cli) -> None:
    refused(run("slot", "create", "extra_slot"), "not a terminal", "--yes")
    refused(run("slot", "drop"), "not a terminal", "--yes")
    assert migrated.confirmed_lsn("extra_slot") is None
    assert migrated.confirmed_lsn() is not None


@pytest.mark.single_slot("drops the default slot, which a sharded outbox does not have")
def test_on_a_terminal_the_answer_decides(migrated: Target, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdc.cli import _output

    monkeypatch.setattr(_output, "stdin_is_tty", lambda: True)
    refused(run("slot", "drop", input="n\n"), "not confirmed")
    assert migrated.confirmed_lsn() is not None
    ok(run("slot", "drop", input="y\n"))
    assert migrated.confirmed_lsn() is None


def test_failover_needs_postgres_17(migrated: Target, run: Cli, pg_server: PgServer) -> None:
    result = run("slot", "create", "fo_slot", "--failover", "--yes", "--json")
    if pg_server.major < 17:
        refused(result, "failover slots need PostgreSQL 17", "drop --failover")
        assert migrated.confirmed_lsn("fo_slot") is None
    else:
        assert json.loads(ok(result).stdout)["failover"] is True
        with migrated.pg() as conn:
            assert conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = 'fo_slot'").fetchone() == (True,)


def _failover(t: Target, slot: str) -> object:
    with t.pg() as conn:
        row = conn.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    assert row is not None, f"no slot {slot}"
    return row[0]


@pytest.mark.single_slot("reads cdc_outbox's failover flag; tests/shards checks the shards'")
def test_slots_are_failover_slots_by_default_where_the_server_has_them(
    migrated: Target, run: Cli, pg_server: PgServer
) -> None:
    created = json.loads(ok(run("slot", "create", "default_slot", "--yes", "--json")).stdout)
    opted_out = json.loads(ok(run("slot", "create", "plain_slot", "--no-failover", "--yes", "--json")).stdout)
    assert opted_out["failover"] is False
    if pg_server.major >= 17:
        assert created["failover"] is True
        assert _failover(migrated, "cdc_outbox") is True  # made by `cdc migrate`
        assert _failover(migrated, "default_slot") is True
        assert _failover(migrated, "plain_slot") is False
    else:
        assert created["failover"] is False
        assert migrated.confirmed_lsn("default_slot") is not None


@pytest.mark.single_slot("reads cdc_outbox's failover flag; tests/shards checks the shards'")
def test_migrate_makes_a_failover_slot_unless_told_not_to(target: Target, run: Cli, pg_server: PgServer) -> None:
    if pg_server.major < 17:
        refused(run("migrate", "--failover"), "failover slots need PostgreSQL 17", "drop --failover")
        assert target.confirmed_lsn() is None
        report = json.loads(ok(run("migrate", "--json")).stdout)
        assert report["slot_created"] is True and report["slot_failover"] is False
        return
    report = json.loads(ok(run("migrate", "--no-failover", "--json")).stdout)
    assert report["slot_created"] is True and report["slot_failover"] is False
    assert _failover(target, "cdc_outbox") is False


def test_temporary_slot_lives_as_long_as_the_command(migrated: Target) -> None:
    proc = migrated.start("slot", "create", "temp_slot", "--temporary", "--yes")
    try:
        wait_until(lambda: migrated.confirmed_lsn("temp_slot") is not None, 30, "the temporary slot")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert migrated.confirmed_lsn("temp_slot") is None


@pytest.mark.single_slot("drops and advances the default slot while cdc run streams it")
def test_drop_refuses_an_active_slot_unless_forced(migrated: Target, run: Cli) -> None:
    proc = migrated.start("run", "--status-interval", "0.2")
    try:
        wait_until(lambda: _active(migrated), 30, "cdc run to hold the slot")
        refused(run("slot", "drop", "--yes"), "in use by process", "--force")
        assert migrated.confirmed_lsn() is not None
        refused(run("slot", "advance", "--to-lsn", migrated.current_lsn(), "--yes"), "in use by process")
        out = json.loads(ok(run("slot", "drop", "--force", "--yes", "--json")).stdout)
        assert out["dropped"] and out["terminated_pid"]
        assert migrated.confirmed_lsn() is None
    finally:
        proc.kill()
        proc.communicate()


def _active(t: Target) -> bool:
    with t.pg() as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'").fetchone()
    return bool(row and row[0])


@pytest.mark.single_slot("advances the default slot; tests/workers/test_sharded_admin.py advances a shard's")
def test_advance_moves_forward_only(migrated: Target, run: Cli) -> None:
    before = migrated.confirmed_lsn()
    assert before is not None
    with migrated.pg() as conn:
        conn.execute("CREATE TABLE filler AS SELECT g FROM generate_series(1, 1000) g")
    target_lsn = migrated.current_lsn()
    out = json.loads(ok(run("slot", "advance", "--to-lsn", target_lsn, "--yes", "--json")).stdout)
    assert out["before"] == before
    assert migrated.confirmed_lsn() == out["after"]
    line = refused(run("slot", "advance", "--to-lsn", before, "--yes"), "before slot cdc_outbox's confirmed position")
    assert out["after"] in line
    refused(run("slot", "advance", "--to-lsn", "not-an-lsn", "--yes"), "is not an LSN", code=2)
    refused(run("slot", "advance", "--to-lsn", "FFFFFFFF/0", "--yes"), "past the server's current WAL position")
    assert migrated.confirmed_lsn() == out["after"]

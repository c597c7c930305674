"""Accidents to the events table, each found by ``cdc verify``, repaired exactly by ``--repair`` and verified clean."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from admin_support import Cli, ok
from support import Target, insert_events, stop, wait_until
from test_verify import delete_events, named, verify

JANUARY = [f"jan-{i}" for i in range(120)]
FEBRUARY = [f"feb-{i}" for i in range(80)]
LATE = [f"late-{i}" for i in range(30)]  # occurred now


def _deliver_two_months(t: Target, run: Cli) -> None:
    """Events of two months (the events table is partitioned by month of occurred_at), delivered."""
    with t.pg() as conn:
        for ids, day in ((JANUARY, "2026-01-15"), (FEBRUARY, "2026-02-15")):
            with conn.transaction():
                conn.cursor().executemany(
                    "INSERT INTO outbox (unique_id, event_type, occurred_at) VALUES (%s, 't', %s)",
                    [(uid, day) for uid in ids],
                )
    ok(run("run", "--until-lsn", "current"))


def _physical_copies(t: Target) -> dict[str, int]:
    """unique_ids held more than once by the events table, merged or not (no FINAL)."""
    return dict(t.ch().execute("SELECT unique_id, count() AS n FROM events GROUP BY unique_id HAVING n > 1"))


def _truncate(t: Target) -> set[str]:
    t.ch().execute("TRUNCATE TABLE events")
    return set(JANUARY + FEBRUARY + LATE)


def _drop_partition(t: Target) -> set[str]:
    t.ch().execute("ALTER TABLE events DROP PARTITION 202601")
    return set(JANUARY)


def _delete_some(t: Target) -> set[str]:
    delete_events(t, "unique_id IN ('jan-3', 'jan-77', 'feb-0', 'feb-79')")
    return {"jan-3", "jan-77", "feb-0", "feb-79"}


def _restore_older_copy(t: Target) -> set[str]:
    ch = t.ch()
    ch.execute("CREATE TABLE events_backup AS events")
    ch.execute("INSERT INTO events_backup SELECT * FROM events WHERE unique_id NOT LIKE 'late-%'")
    ch.execute("TRUNCATE TABLE events")
    ch.execute("INSERT INTO events SELECT * FROM events_backup")  # the backup predates the late events
    return set(LATE)


@pytest.mark.parametrize("accident", [_truncate, _drop_partition, _delete_some, _restore_older_copy])
def test_lost_events_are_found_repaired_exactly_and_verified_clean(
    migrated: Target, run: Cli, accident: Callable[[Target], set[str]]
) -> None:
    _deliver_two_months(migrated, run)
    with migrated.pg() as conn:
        insert_events(conn, LATE)
    ok(run("run", "--until-lsn", "current"))
    assert verify(run)["status"] == "agree"

    lost = accident(migrated)
    report = verify(run, "--samples", "1000", code=1)
    assert report["missing"]["count"] == len(lost) and named(report, "missing") == lost
    assert report["unexpected"]["count"] == report["in_flight"]["count"] == report["undetermined"]["count"] == 0
    # A second pass over the differing buckets, sending their hashes: at least the lost ones.
    assert report["read"]["postgres"]["passes"] == 2 and report["read"]["postgres"]["hashes_sent"] >= len(lost)

    repaired = verify(run, "--repair")
    assert repaired["repaired"] and repaired["repair"]["delivered"] == len(lost)
    assert repaired["repair"]["events_stored"] == len(lost)
    clean = verify(run)
    assert clean["status"] == "agree" and clean["clickhouse_ids"] == len(JANUARY + FEBRUARY + LATE)
    assert _physical_copies(migrated) == {}
    # A second repair finds nothing to do, and the pipeline goes on where it was.
    assert verify(run, "--repair")["repair"]["delivered"] == 0
    with migrated.pg() as conn:
        insert_events(conn, ["after-repair"])
    ok(run("run", "--until-lsn", "current"))
    assert verify(run)["status"] == "agree" and _physical_copies(migrated) == {}


def test_rows_no_outbox_row_explains_are_deleted_only_when_asked(migrated: Target, run: Cli) -> None:
    _deliver_two_months(migrated, run)
    ch = migrated.ch()
    hwm = ch.execute("SELECT max(commit_lsn) FROM events_cdc_progress")[0][0]
    # Typed in by hand with a position past everything real: the ledger's high-water mark follows it.
    ch.execute("INSERT INTO events (unique_id, event_type, outbox_id, commit_lsn) SELECT 'by-hand', 't', 0, "
               "toUInt64(9000000000000000000)")
    ch.execute("INSERT INTO events (unique_id, event_type, outbox_id, commit_lsn) "
               "SELECT 'impostor', 't', outbox_id, commit_lsn FROM events WHERE unique_id = 'feb-5'")
    report = verify(run, code=1)
    assert named(report, "unexpected") == {"by-hand", "impostor"} and report["missing"]["count"] == 0

    kept = verify(run, "--repair", code=1)  # repair alone delivers; it deletes nothing
    assert kept["repair"]["deleted"] == 0 and named(kept, "unexpected") == {"by-hand", "impostor"}
    refused = run("verify", "--delete-unexpected")
    assert refused.exit_code == 2 and "goes with --repair" in refused.stderr

    deleted = verify(run, "--repair", "--delete-unexpected", "--yes")
    assert deleted["repaired"] and deleted["repair"]["deleted"] == 2
    assert verify(run)["status"] == "agree"
    assert ch.execute("SELECT count() FROM events WHERE unique_id IN ('by-hand', 'impostor')") == [(0,)]
    assert ch.execute("SELECT count() FROM events WHERE unique_id = 'feb-5'") == [(1,)]
    assert ch.execute("SELECT max(commit_lsn) FROM events_cdc_progress")[0][0] == hwm
    with migrated.pg() as conn:
        insert_events(conn, ["after-delete"])
    ok(run("run", "--until-lsn", "current"))
    wait_until(lambda: ch.execute("SELECT count() FROM events WHERE unique_id = 'after-delete'") == [(1,)], 10,
               "the pipeline to deliver past the deleted position")


@pytest.mark.single_slot("reads the one slot's status report")
def test_a_ledger_claiming_more_than_the_events_table_is_a_warning_until_repaired(migrated: Target, run: Cli) -> None:
    _deliver_two_months(migrated, run)
    proc = migrated.start("run")  # status grades an idle slot; keep one streaming
    try:
        wait_until(lambda: json.loads(run("status", "--json").stdout)["slot"]["active"], 30, "cdc run to stream")
        assert run("status").exit_code == 0
        migrated.ch().execute("TRUNCATE TABLE events")
        status = run("status", "--json")
        assert status.exit_code == 1
        problems = json.loads(status.stdout)["problems"]
        assert [p["level"] for p in problems] == ["warning"]
        assert "records 200 of its 200 recent events" in problems[0]["message"]
        assert "cdc verify --repair" in problems[0]["message"]
        doctor = run("doctor").stdout
        assert "WARN  clickhouse ledger" in doctor and "fix: cdc verify --repair" in doctor
        assert verify(run, "--repair")["repaired"]
        assert run("status").exit_code == 0
        assert "PASS  clickhouse ledger" in run("doctor").stdout
    finally:
        stop(proc)

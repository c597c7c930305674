"""``cdc backfill``: re-deliver outbox rows of a time range through the pipeline's path, positions that never
move the high-water mark, duplicates collapsing."""

from __future__ import annotations

import json

import pytest
from admin_support import Cli, ok, refused
from support import Target, insert_events

from cdc.core import positions


def _rows(t: Target) -> list[tuple[object, ...]]:
    return t.ch().execute("SELECT unique_id, commit_lsn, commit_seq, outbox_id FROM events FINAL ORDER BY outbox_id")


@pytest.mark.single_slot("loses rows by advancing the one slot; tests/workers/test_sharded_admin.py backfills each shard")
def test_backfill_redelivers_a_lost_range_without_moving_the_high_water_mark(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["b1", "b2", "b3"])
    ok(run("run", "--until-lsn", "current"))
    ch = migrated.ch()
    hwm_before = ch.execute("SELECT max(commit_lsn) FROM events_cdc_progress")[0][0]
    with migrated.pg() as conn:
        old_ids = [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY id").fetchall()]
        # Rows the slot never delivered (as after an invalidated slot): old created_at, then acknowledged past.
        conn.execute(
            "INSERT INTO outbox (unique_id, event_type, payload, created_at) VALUES "
            "('lost-1', 'lost', '{}', '2001-02-03 04:05:06+00'), ('lost-2', 'lost', '{}', '2001-02-03 05:00:00+00'),"
            "('lost-3', 'lost', '{}', '2001-02-04 00:00:00+00')"
        )
    ok(run("slot", "advance", "--to-lsn", migrated.current_lsn(), "--yes"))
    assert {r[0] for r in _rows(migrated)} == {"b1", "b2", "b3"}

    result = ok(run("backfill", "--since", "2001-02-03", "--until", "2001-02-04", "--json"))
    summary = json.loads(result.stdout)
    assert summary["rows_read"] == 2 and summary["events_stored"] == 2 and summary["duplicates"] == 0
    # Off a terminal, progress is JSON log lines on stderr; the last says the phase is done.
    progress = [r for line in result.stderr.splitlines() if line.startswith("{")
                if (r := json.loads(line))["event"].startswith("backfill ")]
    assert progress[-1]["event"] == "backfill phase done" and progress[-1]["phase"] == "rows"
    assert (progress[-1]["done"], progress[-1]["total"]) == (2, 2)
    rows = {r[0]: r for r in _rows(migrated)}
    assert set(rows) == {"b1", "b2", "b3", "lost-1", "lost-2"}
    for uid in ("lost-1", "lost-2"):
        _, lsn, seq, outbox_id = rows[uid]
        assert (lsn, seq) == positions.backfill_position(outbox_id)  # type: ignore[arg-type]
        assert positions.is_synthetic(lsn)  # type: ignore[arg-type]
    assert ch.execute("SELECT max(commit_lsn) FROM events_cdc_progress")[0][0] == hwm_before

    # Everything again, without the dedup window: stored twice, collapsing to one row each.
    summary = json.loads(ok(run("backfill", "--since", "2000-01-01", "--dedup-window", "0", "--json")).stdout)
    assert summary["rows_read"] == 6 and summary["events_stored"] == 6
    rows = {r[0]: r for r in _rows(migrated)}
    assert set(rows) == {"b1", "b2", "b3", "lost-1", "lost-2", "lost-3"}
    assert sorted(r[3] for r in rows.values())[:3] == old_ids
    # The pipeline still resumes where it was: nothing skipped, nothing re-sent.
    with migrated.pg() as conn:
        insert_events(conn, ["after"])
    ok(run("run", "--until-lsn", "current"))
    assert migrated.delivered_ids().count("after") == 1


def test_recently_delivered_ids_are_skipped_by_the_dedup_window(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["d1", "d2"])
    ok(run("run", "--until-lsn", "current"))
    text = ok(run("backfill", "--since", "2000-01-01")).stdout
    assert "2 rows read, 0 events and 0 dead letters stored, 2 duplicates skipped" in text
    assert sorted(migrated.delivered_ids()) == ["d1", "d2"]


def test_dead_letters_keep_one_position_per_row_across_backfills(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute(
            "INSERT INTO outbox (unique_id, event_type, occurred_at, created_at) VALUES "
            "('too-old', 'x', '1960-01-01 00:00:00+00', '2001-01-01'), ('fine', 'x', now(), '2001-01-01')"
        )
    for since in ("2000-01-01", "2001-01-01", "2000-06-01"):
        summary = json.loads(ok(run("backfill", "--since", since, "--dedup-window", "0", "--json")).stdout)
        assert summary["dead_letters_stored"] == 1 and summary["events_stored"] == 1
    ch = migrated.ch()
    letters = ch.execute("SELECT commit_lsn, commit_seq, reason FROM events_dead_letter FINAL")
    assert len(letters) == 1 and "outside what ClickHouse can store" in letters[0][2]
    with migrated.pg() as conn:
        too_old = conn.execute("SELECT id FROM outbox WHERE unique_id = 'too-old'").fetchone()[0]  # type: ignore[index]
    assert letters[0][:2] == positions.backfill_position(too_old)


def test_an_interrupted_first_copy_is_not_hidden(migrated: Target, run: Cli) -> None:
    migrated.ch().execute(
        "INSERT INTO events_cdc_progress (unique_id, commit_lsn, commit_seq, committed_at, inserted_at) "
        "SELECT 'copied', 0, 41, now(), now()"
    )
    refused(run("backfill", "--since", "2000-01-01"), "first copy", "cdc run --create-slot")
    assert migrated.ch().execute("SELECT max(commit_lsn) FROM events_cdc_progress") == [(0,)]


def test_bad_ranges_are_refused(migrated: Target, run: Cli) -> None:
    refused(run("backfill", "--since", "yesterday-ish"), "--since 'yesterday-ish' is not a timestamp")
    refused(run("backfill", "--since", "2020-01-02", "--until", "2020-01-01"), "is not after --since")
    refused(run("backfill", "--since", "2020-01-01'; DROP TABLE outbox; --"), "is not a timestamp")
    with migrated.pg() as conn:
        assert conn.execute("SELECT to_regclass('outbox') IS NOT NULL").fetchone() == (True,)

"""ALTER TABLE on the outbox while the pipeline streams: the server re-describes the table, nothing is lost.

Widening metadata_version to bigint lets the application write values that
ClickHouse's Int32 column cannot hold: such a row is dead-lettered (it used to
fail its batch's INSERT on every attempt, and stop the pipeline for good).
Renaming a required column is the one change that stops the pipeline, clearly.
"""

from __future__ import annotations

import time

from fault_support import CdcProcess, Writer, assert_exactly, catch_up
from support import Target, insert_events

ALTERATIONS = (
    "ALTER TABLE outbox ADD COLUMN tenant text NOT NULL DEFAULT 'acme'",
    "ALTER TABLE outbox ALTER COLUMN metadata_version TYPE bigint",
    "ALTER TABLE outbox DROP COLUMN tenant",
    "ALTER TABLE outbox ALTER COLUMN event_type TYPE varchar(200)",
)


def test_alter_table_mid_stream_loses_nothing(migrated: Target) -> None:
    t = migrated
    writer = Writer(t, "s", seed="schema", max_rows=20, rollback_every=6)
    run = CdcProcess(t, "run", "--flush-interval", "0.2", "--dedup-window", "0")
    writer.start()
    try:
        run.wait_for("flushed")
        for statement in ALTERATIONS:
            with t.pg() as conn:
                conn.execute(statement)
            time.sleep(0.7)  # rows written under the new shape, while the stream runs
        with t.pg() as conn:
            for uid, version in (("widened", 2_000_000_000), ("too-wide", 5_000_000_000)):
                conn.execute(
                    "INSERT INTO outbox (unique_id, event_type, payload, metadata_version) VALUES (%s, 'x', '{}', %s)",
                    (uid, version),
                )
            insert_events(conn, ["last"])
    finally:
        writer.stop()
    catch_up(t)
    code = run.stop()
    assert code == 0, run.tail()
    assert_exactly(t, [*writer.committed, "widened", "last"])
    version = t.ch().execute("SELECT metadata_version FROM events WHERE unique_id = 'widened'")
    assert version == [(2_000_000_000,)]
    # Past ClickHouse's Int32: that row alone is set aside, the stream goes on.
    [letter] = run.events("row dead-lettered")
    assert letter["reason"] == "metadata_version 5000000000 is outside ClickHouse's Int32 range"
    [(reason, row_json)] = t.ch().execute("SELECT reason, row_json FROM events_dead_letter")
    assert reason == letter["reason"] and '"too-wide"' in row_json


def test_rows_written_while_a_required_column_is_renamed_are_dead_lettered_and_the_stream_goes_on(
    migrated: Target,
) -> None:
    t = migrated
    run = CdcProcess(t, "run", "--flush-interval", "0.2")
    with t.pg() as conn:
        insert_events(conn, ["before-rename"])
    catch_up(t)
    with t.pg() as conn:
        conn.execute("ALTER TABLE outbox RENAME COLUMN environment TO env")
        conn.execute("INSERT INTO outbox (unique_id, event_type, env) VALUES ('after-rename', 'x', 'test')")
        conn.execute("ALTER TABLE outbox RENAME COLUMN env TO environment")
        insert_events(conn, ["after-restore"])
    catch_up(t)
    code = run.stop()
    assert code == 0, run.tail()
    # The row of the renamed layout can never be read as an event, even with the
    # column back: it is kept, with its data and the reason, and nothing stops.
    assert_exactly(t, ["before-rename", "after-restore"])
    [(reason, row_json)] = t.ch().execute("SELECT reason, row_json FROM events_dead_letter")
    assert "lacks column(s) environment" in reason
    assert '"unique_id":"after-rename"' in row_json and '"env":"test"' in row_json
    assert run.events("outbox rows cannot be read as events")

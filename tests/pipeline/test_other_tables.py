"""Rows of a table that is not the outbox are kept in the dead-letter table, never dropped."""

from __future__ import annotations

import pytest
from support import Target, checked, insert_events, stop, wait_until


@pytest.mark.single_slot("adds a table to the one publication, cdc_outbox")
def test_a_table_added_to_the_publication_while_running_is_dead_lettered_not_lost(
    pg_dsn: str, clickhouse_url: str
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    proc = t.start("run", "--flush-interval", "0.2")
    try:
        with t.pg() as conn:
            conn.execute("CREATE TABLE audit (id int PRIMARY KEY, note text)")
            conn.execute("ALTER PUBLICATION cdc_outbox ADD TABLE audit")
            conn.execute("INSERT INTO audit VALUES (1, 'not an event')")
            insert_events(conn, ["e1"])
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 60, "everything acknowledged")
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    assert t.delivered_ids() == ["e1"]
    [(relation, reason, row_json)] = t.ch().execute("SELECT relation, reason, row_json FROM events_dead_letter")
    assert relation == "public.audit"
    assert "not the outbox public.outbox" in reason
    assert '"note":"not an event"' in row_json

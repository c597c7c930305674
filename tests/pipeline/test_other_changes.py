"""UPDATE, DELETE and TRUNCATE of the outbox are not events: never delivered, never a reason to stop."""

from __future__ import annotations

import pytest
from support import Target, checked, insert_events


@pytest.mark.parametrize(
    "publish",
    [
        pytest.param("insert", id="publication-as-migrated"),
        # Someone widened the publication: the server now sends the changes, and cdc must still ignore them.
        pytest.param("insert, update, delete, truncate", id="publication-widened"),
    ],
)
@pytest.mark.single_slot("alters the one publication, cdc_outbox")
def test_updates_deletes_and_truncates_of_the_outbox_are_ignored(pg_dsn: str, clickhouse_url: str, publish: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        conn.execute(f"ALTER PUBLICATION cdc_outbox SET (publish = '{publish}')")
        insert_events(conn, ["a1", "a2", "a3"])
        conn.execute("UPDATE outbox SET event_type = 'changed', payload = '{\"changed\": true}' WHERE unique_id = 'a1'")
        conn.execute("DELETE FROM outbox WHERE unique_id = 'a2'")
        insert_events(conn, ["b1"])
        conn.execute("TRUNCATE outbox")
        insert_events(conn, ["c1"])
        # One transaction mixing them with an insert.
        with conn.transaction():
            insert_events(conn, ["d1"])
            conn.execute("UPDATE outbox SET environment = 'changed' WHERE unique_id = 'd1'")
            conn.execute("DELETE FROM outbox WHERE unique_id = 'c1'")
    until = t.current_lsn()
    checked(t.cdc("run", "--until-lsn", until, "--flush-interval", "0.1"))

    assert sorted(t.delivered_ids()) == ["a1", "a2", "a3", "b1", "c1", "d1"]
    rows = dict(t.ch().execute("SELECT unique_id, (event_type, environment, payload) FROM events"))
    # As inserted: the UPDATEs changed nothing in ClickHouse.
    assert rows["a1"] == ("test", "test", '{"uid": "a1"}')
    assert rows["d1"] == ("test", "test", '{"uid": "d1"}')
    assert t.ch().execute("SELECT count() FROM events_dead_letter") == [(0,)]
    assert t.slot_reached(until)

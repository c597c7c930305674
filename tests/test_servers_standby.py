"""The PostgreSQL primary + standby fixture syncs failover slots and survives a failover."""

from __future__ import annotations

import psycopg
from servers.pg_standby import StandbyPair


def _one(dsn: str, query: str, params: list[object] | None = None) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_standby_streams_through_its_slot_and_is_set_up_for_slot_sync(pg_standby: StandbyPair) -> None:
    primary, standby = pg_standby.dsn(), pg_standby.standby_dsn()
    assert _one(standby, "SELECT pg_is_in_recovery()") is True
    assert _one(standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert _one(
        primary, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [pg_standby.physical_slot]
    ) is True
    assert _one(primary, "SHOW synchronized_standby_slots") == pg_standby.physical_slot
    # The standby must not inherit it: promoted, it would wait for a slot it does not have.
    assert _one(standby, "SHOW synchronized_standby_slots") == ""
    assert _one(standby, "SHOW sync_replication_slots") == "on"
    assert _one(standby, "SHOW hot_standby_feedback") == "on"
    assert "dbname=postgres" in str(_one(standby, "SHOW primary_conninfo"))
    assert _one(primary, "SHOW wal_level") == "logical"


def test_failover_slot_is_synced_and_streams_from_the_promoted_standby(pg_standby: StandbyPair) -> None:
    with psycopg.connect(pg_standby.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE outbox (id bigserial PRIMARY KEY, payload text)")
        conn.execute("CREATE PUBLICATION pub FOR TABLE outbox")
        conn.execute("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput', false, false, true)")
    # Nothing in the slot yet, so advancing it to get it persistent loses nothing.
    pg_standby.wait_slot_synced("cdc", advance=True)
    assert pg_standby.synced_slot("cdc") == (True, False)

    multi = pg_standby.multi_host_dsn()
    assert _one(multi, "SELECT inet_server_port()") == pg_standby.primary.port
    with psycopg.connect(multi, autocommit=True) as conn:
        conn.execute("INSERT INTO outbox (payload) SELECT 'row ' || g FROM generate_series(1, 10) g")
    pg_standby.wait_caught_up()

    pg_standby.stop_primary("immediate")
    pg_standby.promote_standby()

    assert _one(multi, "SELECT inet_server_port()") == pg_standby.standby.port
    assert _one(multi, "SELECT pg_is_in_recovery()") is False
    # BEGIN, RELATION, ten INSERTs, COMMIT: every row committed before the failover.
    messages = _one(
        multi,
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes("
        "'cdc', NULL, NULL, 'proto_version', '1', 'publication_names', 'pub')",
    )
    assert messages == 13

"""The fixtures hand out real servers, configured the way the project needs."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from clickhouse_driver import Client
from psycopg import sql
from servers import ClickHouse, PgServer
from servers.postgres import create_database, drop_database


def _scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_postgres_runs_with_logical_wal_level(pg_server: PgServer, pg_dsn: str) -> None:
    assert _scalar(pg_dsn, "SHOW wal_level") == "logical"
    assert int(str(_scalar(pg_dsn, "SHOW max_replication_slots"))) >= 10


def test_postgres_major_version_matches_the_server_kind(pg_server: PgServer, pg_dsn: str) -> None:
    server_major = int(str(_scalar(pg_dsn, "SHOW server_version_num"))) // 10000
    assert server_major == pg_server.major
    if pg_server.kind in ("pg18", "pg15"):
        assert pg_server.major == int(pg_server.kind[2:])


def test_each_pg_dsn_is_a_fresh_empty_database(pg_dsn: str) -> None:
    dbname = str(_scalar(pg_dsn, "SELECT current_database()"))
    assert dbname.startswith("t_")
    tables = _scalar(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert tables == 0


def test_pgoutput_slot_can_be_created_and_dropped(pg_dsn: str) -> None:
    slot = f"s_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE outbox (id bigserial PRIMARY KEY, payload text)")
        conn.execute("CREATE PUBLICATION pub FOR TABLE outbox")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        conn.execute("INSERT INTO outbox (payload) VALUES ('hello')")
        changes = conn.execute(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes("
            "%s, NULL, NULL, 'proto_version', '1', 'publication_names', 'pub')",
            [slot],
        ).fetchone()
        assert changes is not None and changes[0] >= 3  # BEGIN, RELATION, INSERT, COMMIT
        conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        left = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
    assert left == (0,)


def test_pg_dsn_teardown_drops_a_slot_held_by_a_live_walsender(pg_server: PgServer) -> None:
    # The pg_dsn teardown, called by hand so its effect can be observed.
    name = f"t_{secrets.token_hex(6)}"
    create_database(pg_server, name)
    walsender = psycopg.connect(pg_server.dsn(name), replication="database", autocommit=True)
    walsender.execute("CREATE_REPLICATION_SLOT held LOGICAL pgoutput")
    try:
        drop_database(pg_server, name)
    finally:
        walsender.close()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s", [name]).fetchone() == (0,)


def test_non_superuser_roles_must_give_their_password(pg_server: PgServer, pg_dsn: str) -> None:
    role = f"r_{secrets.token_hex(4)}"
    dbname = str(_scalar(pg_dsn, "SELECT current_database()"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right'").format(sql.Identifier(role)))
    try:
        assert _scalar(pg_server.dsn(dbname, user=role, password="right"), "SELECT current_user") == role
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(pg_server.dsn(dbname, user=role, password="wrong")).close()
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_postgres_restart_keeps_data_and_port(pg_server: PgServer, pg_dsn: str) -> None:
    if not pg_server.can_restart:
        pytest.skip("server is not started by the test suite")
    port = pg_server.port
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    pg_server.restart()
    assert pg_server.port == port
    assert _scalar(pg_dsn, "SELECT v FROM kept") == 42
    pg_server.restart("immediate")
    assert _scalar(pg_dsn, "SELECT v FROM kept") == 42


def test_postgres_set_config_applies_reloadable_settings(pg_server: PgServer, pg_dsn: str) -> None:
    pg_server.set_config(wal_sender_timeout="17s")
    try:
        assert _scalar(pg_dsn, "SHOW wal_sender_timeout") == "17s"
    finally:
        pg_server.set_config(wal_sender_timeout=None)
    assert _scalar(pg_dsn, "SHOW wal_sender_timeout") == "1min"


def test_clickhouse_answers_its_version(clickhouse_server: ClickHouse, clickhouse_url: str) -> None:
    client = Client.from_url(clickhouse_url)
    try:
        (version,), = client.execute("SELECT version()")
    finally:
        client.disconnect()
    assert version == clickhouse_server.version
    assert clickhouse_url.startswith(f"clickhouse://default@127.0.0.1:{clickhouse_server.port}/t_") or (
        not clickhouse_server.can_restart
    )


def test_clickhouse_mergetree_table_round_trips_rows(clickhouse_url: str) -> None:
    client = Client.from_url(clickhouse_url)
    try:
        client.execute("CREATE TABLE events (id UInt64, body String) ENGINE = MergeTree ORDER BY id")
        rows = [(i, f"event {i}") for i in range(1000)]
        client.execute("INSERT INTO events (id, body) VALUES", rows)
        assert client.execute("SELECT id, body FROM events ORDER BY id") == rows
    finally:
        client.disconnect()


def test_clickhouse_restart_keeps_data(clickhouse_server: ClickHouse, clickhouse_url: str) -> None:
    if not clickhouse_server.can_restart:
        pytest.skip("server is not started by the test suite")
    client = Client.from_url(clickhouse_url)
    client.execute("CREATE TABLE kept (v UInt8) ENGINE = MergeTree ORDER BY v")
    client.execute("INSERT INTO kept VALUES", [(7,)])
    client.disconnect()
    port = clickhouse_server.port
    clickhouse_server.restart()
    assert clickhouse_server.port == port
    client = Client.from_url(clickhouse_url)
    try:
        assert client.execute("SELECT v FROM kept") == [(7,)]
    finally:
        client.disconnect()


def test_clickhouse_added_user_logs_in_with_its_password(clickhouse_server: ClickHouse, clickhouse_url: str) -> None:
    database = clickhouse_url.rsplit("/", 1)[1]
    name = f"u_{secrets.token_hex(4)}"
    clickhouse_server.add_user(name, "s3cret", databases=[database])
    try:
        client = Client.from_url(clickhouse_server.url(database, user=name, password="s3cret"))
        try:
            assert client.execute("SELECT 1") == [(1,)]
        finally:
            client.disconnect()
    finally:
        clickhouse_server.remove_user(name)

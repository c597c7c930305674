"""``cdc run --until-lsn current`` delivers every transaction committed before it started, asynchronous ones too."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from servers.postgres import PostgresServer
from support import Target, checked, insert_events


@pytest.fixture
def lazy_wal_writer(pg_server: object) -> Iterator[None]:
    """A WAL writer that writes asynchronous commits only every 10 s (the default is 200 ms)."""
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("needs a server the tests start: it changes the WAL writer's delay")
    pg_server.set_config(wal_writer_delay="10s")
    try:
        yield
    finally:
        pg_server.set_config(wal_writer_delay=None)


def test_until_current_waits_for_commits_whose_wal_is_not_yet_written(
    pg_dsn: str, clickhouse_url: str, lazy_wal_writer: None
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    ids = [f"async-{i}" for i in range(20)]
    with psycopg.connect(t.pg_dsn, autocommit=True) as conn:
        # Committed, but its WAL still in the server's buffers: pg_current_wal_lsn() stays behind it.
        conn.execute("SET synchronous_commit = off")
        insert_events(conn, ids, event_type="async.test")
    checked(t.cdc("run", "--until-lsn", "current"))
    assert sorted(row[0] for row in t.ch().execute("SELECT unique_id FROM events")) == sorted(ids)

"""A sharded worker as the least-privilege role: docs/least-privilege.sql and docs/least-privilege-shards.sql."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from psycopg import sql
from servers import PgServer
from shard_support import assert_exactly
from support import Target, checked, insert_events

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROLE, SECRET = "cdc_replicator", "Least-Priv-shards-1"


@pytest.fixture
def role(pg_dsn: str, clickhouse_url: str, pg_server: PgServer) -> Iterator[tuple[Target, Target]]:
    owner = Target(pg_dsn, clickhouse_url)
    checked(owner.cdc("migrate", "--shards", "2"))
    with owner.pg() as conn:
        # The base file makes the unsharded publication (harmless here) and the role.
        conn.execute((DOCS / "least-privilege.sql").read_text())
        conn.execute((DOCS / "least-privilege-shards.sql").read_text())
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(SECRET)))
        dbname = conn.info.dbname
    try:
        yield owner, Target(pg_server.dsn(dbname, user=ROLE, password=SECRET), clickhouse_url)
    finally:
        with owner.pg() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(ROLE)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(ROLE)))


def test_a_worker_runs_as_the_least_privilege_role(role: tuple[Target, Target]) -> None:
    owner, worker = role
    ids = [f"lp-{i}" for i in range(60)]
    with owner.pg() as conn:
        insert_events(conn, ids)
    result = checked(worker.cdc("run", "--until-lsn", "current"))
    assert SECRET not in result.stdout + result.stderr
    assert_exactly(owner, ids)
    checks = {c["check"]: c["status"] for c in orjson.loads(worker.cdc("doctor", "--json").stdout)["checks"]}
    assert checks["cdc_workers"] == "PASS" and checks["shards"] == "PASS"

"""Each precondition that fails gets one line saying what to do, a non-zero exit, and no acknowledgement."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import PgServer
from servers.postgres import PostgresServer, create_database
from support import Target, checked


def _refused(result: object, *needles: str) -> str:
    line = result.stderr.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert result.returncode == 1, result.stderr  # type: ignore[attr-defined]
    assert line.startswith("cdc: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def migrated(pg_dsn: str, clickhouse_url: str) -> Target:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    return t


BREAKAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "slot missing": ("SELECT pg_drop_replication_slot('cdc_outbox')", ("does not exist", "--create-slot")),
    "publication missing": ("DROP PUBLICATION cdc_outbox", ("publication cdc_outbox does not exist", "CREATE PUBLICATION")),
    "publication elsewhere": (
        "DROP PUBLICATION cdc_outbox; CREATE TABLE other (x int); CREATE PUBLICATION cdc_outbox FOR TABLE other",
        ("does not cover public.outbox", "ALTER PUBLICATION cdc_outbox ADD TABLE"),
    ),
    "publication without inserts": (
        "ALTER PUBLICATION cdc_outbox SET (publish = 'delete')", ("does not publish inserts",)
    ),
    "publication of the partitions": (
        "ALTER PUBLICATION cdc_outbox SET (publish_via_partition_root = false)",
        ("as its partitions'", "publish_via_partition_root = true"),
    ),
    "column missing": ("ALTER TABLE outbox DROP COLUMN environment", ("lacks column(s) environment",)),
    "outbox missing": ("DROP TABLE outbox", ("does not exist", "cdc migrate")),
}


# Those that break the one slot or publication by name: a sharded outbox has cdc_outbox_{k}.
ONE_SLOT = {"slot missing", "publication missing", "publication elsewhere", "publication without inserts",
            "publication of the partitions"}


@pytest.mark.parametrize("sql, needles", [
    pytest.param(*breakage, id=name, marks=[pytest.mark.single_slot("breaks cdc_outbox by name")] if name in ONE_SLOT
                 else []) for name, breakage in BREAKAGES.items()])
def test_broken_setup_is_refused_with_the_fix(migrated: Target, sql: str, needles: tuple[str, ...]) -> None:
    with migrated.pg() as conn:
        conn.execute(sql)
    before = migrated.confirmed_lsn()
    _refused(migrated.cdc("run", "--until-lsn", "current"), *needles)
    assert migrated.confirmed_lsn() == before


@pytest.mark.single_slot("the role has the one-slot grants; tests/shards/test_shard_privileges.py covers the shards'")
def test_role_without_replication_is_told_how_to_grant_it(migrated: Target, pg_server: PgServer) -> None:
    with migrated.pg() as conn:
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'pw-reader-123'")
        conn.execute("GRANT SELECT ON outbox TO reader")
        dbname = conn.info.dbname
    t = Target(pg_server.dsn(dbname, user="reader", password="pw-reader-123"), migrated.clickhouse_url)
    line = _refused(t.cdc("run", "--until-lsn", "current"), "lacks the REPLICATION attribute", "ALTER ROLE reader REPLICATION")
    assert "pw-reader-123" not in line


def test_unreachable_clickhouse_is_refused_at_start(migrated: Target) -> None:
    t = Target(migrated.pg_dsn, "clickhouse://default:topsecret@127.0.0.1:1/db")
    line = _refused(t.cdc("run", "--until-lsn", "current"), "127.0.0.1:1")
    result = t.cdc("run", "--until-lsn", "current")
    assert "topsecret" not in result.stderr + result.stdout
    assert "unreachable" in line or "refused" in line


def test_invalid_names_are_refused_before_any_connection(migrated: Target) -> None:
    result = migrated.cdc("run", "--slot", 'x"; DROP TABLE outbox; --')
    assert result.returncode == 2 and "invalid slot name" in result.stderr
    with migrated.pg() as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() is not None


@pytest.fixture
def replica_level_server(pg_server: PgServer) -> Callable[[], str]:
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("needs a local PostgreSQL binary to start a server with wal_level = replica")
    workdir = Path(tempfile.mkdtemp(prefix="cdc-wal-replica-", dir="/tmp"))
    server = PostgresServer(pg_server.kind, pg_server.bin_dir, workdir)
    server.init()
    with open(server.data_dir / "postgresql.conf", "a") as conf:
        conf.write("wal_level = replica\n")
    server.start()

    def dsn() -> str:
        create_database(server, "app")
        return server.dsn("app")

    yield dsn  # type: ignore[misc]
    server.destroy()
    shutil.rmtree(workdir, ignore_errors=True)


def test_wal_level_below_logical_is_refused_with_the_setting_to_change(
    replica_level_server: Callable[[], str], clickhouse_url: str
) -> None:
    t = Target(replica_level_server(), clickhouse_url)
    _refused(t.cdc("migrate"), "wal_level is 'replica'", "wal_level = logical")
    _refused(t.cdc("run", "--until-lsn", "current"), "wal_level is 'replica'", "wal_level = logical")

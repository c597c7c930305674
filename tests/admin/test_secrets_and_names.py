"""No password in any output, and no name from a flag or argument reaching SQL unvalidated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_support import Cli, ok, refused
from servers import PgServer
from support import TEST_SHARDS, Target, checked

PG_PASSWORD = "Pg-s3cret-w0rd"
CH_PASSWORD = "Ch-s3cret-w0rd"


@pytest.fixture
def with_passwords(migrated: Target, pg_server: PgServer) -> Iterator[Target]:
    """The same database reached as a role that needs a password (scram), and ClickHouse with a URL password.

    ClickHouse's default user has no password, so a URL carrying one is refused: that exercises every
    ClickHouse error path. (A ClickHouse user with a password means waiting for a users.xml reload: seconds
    each time, and on 18.16 it sometimes does not happen within the helper's 30 s.)
    """
    with migrated.pg() as conn:
        dbname = conn.info.dbname
        conn.execute(f"CREATE ROLE cdc_pw LOGIN REPLICATION PASSWORD '{PG_PASSWORD}'")
        conn.execute("GRANT SELECT ON outbox TO cdc_pw")
        if TEST_SHARDS > 1:
            conn.execute("GRANT SELECT ON cdc_shard_generations, cdc_workers TO cdc_pw")
    try:
        yield Target(pg_server.dsn(dbname, "cdc_pw", PG_PASSWORD), migrated.clickhouse_url)
    finally:
        with migrated.pg() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'cdc_pw'")
            conn.execute("DROP OWNED BY cdc_pw")
            conn.execute("DROP ROLE cdc_pw")


def test_no_password_in_any_output(with_passwords: Target, tmp_path: Path) -> None:
    t = with_passwords
    wrong_pg = t.pg_dsn.replace(PG_PASSWORD, PG_PASSWORD + "-wrong")
    with_ch_password = t.clickhouse_url.replace("://default@", f"://default:{CH_PASSWORD}@")
    assert with_ch_password != t.clickhouse_url
    checkpoint = tmp_path / "cp.json"
    in_process = Cli(t)
    runs = [
        ("slot", "list"), ("slot", "list", "--json"), ("status",), ("status", "--json"), ("doctor",),
        ("doctor", "--json"), ("publication", "show"), ("checkpoint", "show"), ("checkpoint", "save", str(checkpoint)),
        ("outbox", "maintain"), ("outbox", "prune", "--older-than", "1d", "--dry-run", "--wait", "0"),
        ("backfill", "--since", "2000-01-01"),
        ("slot", "drop", "no_such_slot", "--yes"), ("publication", "drop", "cdc_outbox"),
    ]
    outputs = []
    for args in runs:
        result = in_process(*args)
        assert result.exit_code in (0, 1, 2), (args, result.stderr)
        outputs.append(result.stdout + result.stderr)
    for args in (("status",), ("doctor",), ("checkpoint", "show"), ("backfill", "--since", "2000-01-01")):
        for env in ({"CDC_PG_DSN": wrong_pg}, {"CDC_CLICKHOUSE_URL": with_ch_password},
                    {"CDC_CLICKHOUSE_URL": t.clickhouse_url, "CDC_CLICKHOUSE_PASSWORD": CH_PASSWORD}):
            result = in_process(*args, **env)
            assert result.exit_code != 0, (args, env, result.stdout)
            outputs.append(result.stdout + result.stderr)
    for args, env in ((("status",), {}), (("doctor",), {"CDC_PG_DSN": wrong_pg}),
                      (("backfill", "--since", "2000-01-01"), {"CDC_CLICKHOUSE_URL": with_ch_password})):
        process = t.cdc(*args, **env)  # the real command, logging JSON to stderr
        outputs.append(process.stdout + process.stderr)
    outputs.append(checkpoint.read_text())
    everything = "\n".join(outputs)
    assert "cdc_pw" in everything and "default" in everything  # the outputs do name the roles...
    for secret in (PG_PASSWORD, CH_PASSWORD):
        assert secret not in everything  # ...never their passwords


def test_checkpoint_with_password_role_records_identity_only(with_passwords: Target, tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checked(with_passwords.cdc("checkpoint", "save", str(path)))
    text = path.read_text()
    assert '"user": "cdc_pw"' in text and PG_PASSWORD not in text and CH_PASSWORD not in text


HOSTILE = ['x"; DROP TABLE outbox; --', "a b", "UPPER", "x'y", "slot;drop", "", "a" * 64]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_before_any_sql(migrated: Target, run: Cli, name: str) -> None:
    with migrated.pg() as conn:
        before = (conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone(),
                  conn.execute("SELECT count(*) FROM pg_publication").fetchone())
    for args in (("slot", "create", name, "--yes"), ("slot", "drop", name, "--yes"),
                 ("slot", "advance", name, "--to-lsn", "0/0", "--yes")):
        if name == "":
            continue  # an empty argument means "the default slot"
        refused(run(*args), "invalid slot name")
    if name not in ("UPPER", ""):
        refused(run("publication", "create", name), "invalid publication name")
        refused(run("publication", "drop", name, "--yes"), "invalid publication name")
        refused(run("publication", "add-table", name), "invalid")
        refused(run("publication", "add-table", f"public.{name}"), "invalid table name")
    for flag in ("--slot", "--publication", "--outbox-table", "--outbox-schema"):
        if name == "UPPER" and flag != "--slot":
            continue
        result = run("status", flag, name)
        assert result.exit_code == 2 and "invalid" in result.stderr
    with migrated.pg() as conn:
        assert conn.execute("SELECT to_regclass('outbox') IS NOT NULL").fetchone() == (True,)
        assert (conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone(),
                conn.execute("SELECT count(*) FROM pg_publication").fetchone()) == before


def test_names_that_need_quoting_are_quoted(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute('CREATE TABLE "Select" (x int)')
    ok(run("publication", "create", "Order"))  # a reserved word, quoted
    ok(run("publication", "add-table", "Select", "--to", "Order"))
    with migrated.pg() as conn:
        tables = conn.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = 'Order' ORDER BY 1").fetchall()
    assert tables == [("Select",), ("outbox",)]

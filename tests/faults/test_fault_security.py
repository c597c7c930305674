"""Hostile and careless conditions: wrong or leaked-looking passwords, TLS settings, least privilege, injection.

Authentication and name checks do not depend on the PostgreSQL version, except
the least-privilege run, which goes against every kind.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from fault_support import CdcProcess, assert_exactly, catch_up, drain
from psycopg import sql
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict
from servers import ClickHouse, PgServer
from support import CDC, TEST_SHARDS, Target, insert_events, wait_until

from cdc.pg.replication import replication_conninfo

LEAST_PRIVILEGE_SQL = Path(__file__).resolve().parents[2] / "docs" / "least-privilege.sql"
ROLE = "cdc_replicator"
# Characters that need escaping in URLs and conninfo strings, and a token that
# would show even a partly masked password.
SECRET = "Zq7Kx-S3cr3t:p@ss/w%rd?x&y=z"
SECRET_TOKEN = "Zq7Kx"


def _spellings(secret: str) -> tuple[str, ...]:
    return (secret, quote(secret, safe=""), quote(secret), SECRET_TOKEN)


def _assert_no_secret(result: subprocess.CompletedProcess[str], secret: str = SECRET) -> str:
    everything = result.stdout + result.stderr
    for spelling in _spellings(secret):
        assert spelling not in everything, f"{spelling!r} leaked:\n{everything[-3000:]}"
    assert result.returncode != 0, "the run was meant to fail"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cdc: error: "), line
    return line


def _with_password(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


@pytest.fixture
def pg_role(migrated: Target) -> Iterator[str]:
    name = "cdc_secret_role"
    with migrated.pg() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
            sql.Identifier(name), sql.Literal("the-right-one")))
    yield name
    with migrated.pg() as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def clickhouse_user(clickhouse_server: ClickHouse) -> Iterator[str]:
    clickhouse_server.add_user("cdc_secret_user", "the-right-one")
    yield "cdc_secret_user"
    clickhouse_server.remove_user("cdc_secret_user")


# -- passwords never printed -------------------------------------------------------------------


@pytest.mark.single_pg
def test_failing_runs_never_print_the_password(
    migrated: Target, pg_role: str, clickhouse_user: str, clickhouse_server: ClickHouse
) -> None:
    t = migrated
    database = urlsplit(t.clickhouse_url).path.lstrip("/")
    wrong_ch = _with_password(clickhouse_server.url(database), clickhouse_user, SECRET)
    wrong_pg = _with_password(t.pg_dsn, pg_role, SECRET)
    pg_params = conninfo_to_dict(t.pg_dsn)
    kv_pg = (
        f"host={pg_params['host']} port={pg_params['port']} dbname={pg_params['dbname']} "
        f"user={pg_role} password='{SECRET}'"
    )
    cases: dict[str, tuple[Target, dict[str, str], tuple[str, ...]]] = {
        "wrong ClickHouse password in the URL": (Target(t.pg_dsn, wrong_ch), {}, ("refused user", clickhouse_user)),
        "wrong ClickHouse password in CDC_CLICKHOUSE_PASSWORD": (
            Target(t.pg_dsn, clickhouse_server.url(database, user=clickhouse_user)),
            {"CDC_CLICKHOUSE_PASSWORD": SECRET}, ("refused user",),
        ),
        "wrong PostgreSQL password (URI)": (Target(wrong_pg, t.clickhouse_url), {}, ("password authentication failed",)),
        "wrong PostgreSQL password (key=value)": (Target(kv_pg, t.clickhouse_url), {}, ("password authentication failed",)),
        "unreachable PostgreSQL": (
            Target(_with_password("postgresql://x@127.0.0.1:1/app", "app", SECRET), t.clickhouse_url), {},
            ("cannot connect to PostgreSQL",),
        ),
        "unreachable ClickHouse": (
            Target(t.pg_dsn, _with_password("clickhouse://x@127.0.0.1:1/db", "default", SECRET)), {},
            ("unreachable",),
        ),
    }
    # All at once (each waits on a refused login or connection), each as `run` and as `migrate`.
    procs = {
        (name, command[0]): subprocess.Popen(
            [*CDC, *command, "--log-level", "debug"], env=target.env(**env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for name, (target, env, _) in cases.items()
        for command in (("run", "--until-lsn", "current"), ("migrate",))
    }
    for (name, command), proc in procs.items():
        out, err = proc.communicate(timeout=60)
        line = _assert_no_secret(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        for needle in cases[name][2]:
            assert needle in line, f"{name}, {command}: {line}"


# -- TLS settings reach the client libraries -----------------------------------------------------


@pytest.mark.single_pg
def test_postgres_tls_settings_reach_libpq(migrated: Target) -> None:
    t = migrated
    required = Target(t.pg_dsn + "?sslmode=require", t.clickhouse_url)
    line = _refused(required.cdc("run", "--until-lsn", "current", timeout=60))
    assert "SSL" in line and "sslmode=require" in line.replace("'", ""), line
    verify = Target(t.pg_dsn + "?sslmode=verify-full&sslrootcert=/nonexistent/root.crt", t.clickhouse_url)
    line = _refused(verify.cdc("run", "--until-lsn", "current", timeout=60))
    assert "/nonexistent/root.crt" in line, line
    # The replication connection is built from the same DSN: it keeps them too.
    params = conninfo_to_dict(replication_conninfo(t.pg_dsn + "?sslmode=require&sslrootcert=/x", application_name="cdc"))
    assert params["sslmode"] == "require" and params["sslrootcert"] == "/x" and params["replication"] == "database"


@pytest.mark.single_pg
def test_clickhouse_tls_is_not_silently_dropped(migrated: Target) -> None:
    t = migrated
    for url in (t.clickhouse_url + "?secure=1", t.clickhouse_url.replace("clickhouse://", "clickhouses://", 1)):
        line = _refused(Target(t.pg_dsn, url).cdc("run", "--until-lsn", "current", timeout=60))
        assert any(word in line for word in ("SSL", "TLS", "ssl", "tls")), line


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cdc: error: "), line
    return line


# -- least privilege -----------------------------------------------------------------------------


# Marks the tests of docs/least-privilege.sql alone: test_sharded_privileges.py runs it with the shards' file.
LEAST_PRIVILEGE_ALONE = "runs docs/least-privilege.sql alone: the one slot's publication"


@pytest.fixture
def least_privilege(migrated: Target, pg_server: PgServer) -> Iterator[Target]:
    """The role of docs/least-privilege.sql, made by running exactly that file."""
    t = migrated
    with t.pg() as conn:
        # The file makes the publication itself; the slot comes from `cdc run --create-slot`.
        conn.execute("DROP PUBLICATION cdc_outbox")
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
        conn.execute(LEAST_PRIVILEGE_SQL.read_text())
        # What `\password cdc_replicator` does, as the file suggests.
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(SECRET)))
        dbname = conn.info.dbname
    try:
        yield Target(pg_server.dsn(dbname, user=ROLE, password=SECRET), t.clickhouse_url)
    finally:
        with t.pg() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,)
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(ROLE)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(ROLE)))


@pytest.mark.single_slot(LEAST_PRIVILEGE_ALONE)
def test_least_privilege_role_runs_the_pipeline(least_privilege: Target, migrated: Target) -> None:
    role = least_privilege
    with role.pg() as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False, True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO outbox (unique_id, event_type) VALUES ('x', 'x')")
    with migrated.pg() as conn:
        insert_events(conn, ["existing-1", "existing-2"])
    result = drain(role, "--create-slot")
    assert SECRET_TOKEN not in result.stdout + result.stderr
    run = CdcProcess(role, "run", "--flush-interval", "0.2")
    try:
        with migrated.pg() as conn:
            insert_events(conn, ["streamed-1", "streamed-2"])
        catch_up(migrated)
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    assert SECRET_TOKEN not in run.output
    assert_exactly(migrated, ["existing-1", "existing-2", "streamed-1", "streamed-2"])


# Every overload of pg_logical_emit_message, as a DBA hardening the database would.
_EMIT_PRIVILEGE = """
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'pg_logical_emit_message' LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM {}', f);
  END LOOP;
END $$"""


def _heartbeat_samples(run: CdcProcess) -> dict[str, float]:
    """The run's heartbeat and event samples of slot cdc_outbox, read from its metrics endpoint."""
    url = str(run.wait_for("serving metrics")["url"])
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        s.name + (f":{s.labels['outcome']}" if "outcome" in s.labels else ""): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
        if s.labels.get("slot") == "cdc_outbox" and "le" not in s.labels
    }


@pytest.mark.single_slot(LEAST_PRIVILEGE_ALONE)
def test_least_privilege_role_times_heartbeats_in_a_database_that_revoked_them_from_public(
    least_privilege: Target, migrated: Target
) -> None:
    with migrated.pg() as conn:
        conn.execute(_EMIT_PRIVILEGE.format("PUBLIC"))  # the file's own GRANT is what lets the role emit
        insert_events(conn, ["before-1"])
    run = CdcProcess(least_privilege, "run", "--create-slot", "--flush-interval", "0.2", "--heartbeat-interval",
                     "0.2", "--metrics-addr", "127.0.0.1:0")
    try:
        wait_until(lambda: _heartbeat_samples(run).get("cdc_heartbeat_latency_seconds_count", 0) >= 2, 60,
                   "two heartbeats timed")
        samples = _heartbeat_samples(run)
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    assert samples["cdc_heartbeat_interval_seconds"] == 0.2
    assert samples["cdc_events_total:stored"] == 1
    assert not [e for e in run.events() if e.get("level") == "warning"], run.tail()
    assert_exactly(migrated, ["before-1"])


@pytest.mark.single_slot(LEAST_PRIVILEGE_ALONE)
def test_least_privilege_role_without_the_grant_says_so_once_and_delivers_without_heartbeats(
    least_privilege: Target, migrated: Target
) -> None:
    with migrated.pg() as conn:
        conn.execute(_EMIT_PRIVILEGE.format("PUBLIC"))
        conn.execute(_EMIT_PRIVILEGE.format(ROLE))
    run = CdcProcess(least_privilege, "run", "--create-slot", "--flush-interval", "0.2", "--heartbeat-interval",
                     "0.1", "--metrics-addr", "127.0.0.1:0")
    try:
        run.wait_for("streaming")
        with migrated.pg() as conn:
            insert_events(conn, ["streamed-1", "streamed-2"])
        catch_up(migrated)
        wait_until(lambda: _heartbeat_samples(run).get("cdc_events_total:stored") == 2, 60, "two events stored")
        samples = _heartbeat_samples(run)
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    warnings = [str(e["event"]) for e in run.events() if e.get("level") == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("heartbeats are off: the role may not emit logical decoding messages")
    assert f"TO {ROLE}" in warnings[0] and "docs/least-privilege.sql" in warnings[0]
    assert samples["cdc_heartbeat_interval_seconds"] == 0
    assert samples["cdc_heartbeat_latency_seconds_count"] == 0
    assert SECRET_TOKEN not in run.output
    assert_exactly(migrated, ["streamed-1", "streamed-2"])


@pytest.mark.single_slot(LEAST_PRIVILEGE_ALONE)
def test_least_privilege_role_without_replication_is_refused_clearly(
    least_privilege: Target, migrated: Target
) -> None:
    with migrated.pg() as conn:
        conn.execute(f"ALTER ROLE {ROLE} NOREPLICATION")
    result = least_privilege.cdc("run", "--create-slot", "--until-lsn", "current", timeout=60)
    line = _assert_no_secret(result)
    assert f"role {ROLE} lacks the REPLICATION attribute" in line, line
    assert f"ALTER ROLE {ROLE} REPLICATION" in line, line


@pytest.mark.single_pg
def test_clickhouse_user_limited_to_its_database(migrated: Target, clickhouse_server: ClickHouse) -> None:
    t = migrated
    database = urlsplit(t.clickhouse_url).path.lstrip("/")
    clickhouse_server.add_user("cdc_writer", SECRET, databases=[database])
    try:
        limited = Target(t.pg_dsn, clickhouse_server.url(database, user="cdc_writer"))
        with t.pg() as conn:
            insert_events(conn, ["limited-1"])
        result = drain(limited, CDC_CLICKHOUSE_PASSWORD=SECRET)
        assert SECRET_TOKEN not in result.stdout + result.stderr
    finally:
        clickhouse_server.remove_user("cdc_writer")
    assert_exactly(t, ["limited-1"])


# -- injection through names ---------------------------------------------------------------------

HOSTILE_NAMES = {
    "slot": ("--slot", 'x"; DROP TABLE outbox; --'),
    "slot-quote": ("--slot", "x'); DROP TABLE outbox; --"),
    "publication": ("--publication", 'p"; DROP TABLE outbox; --'),
    "outbox-table": ("--outbox-table", 'outbox"; DROP TABLE outbox; --'),
    "outbox-schema": ("--outbox-schema", 'public"; DROP SCHEMA public CASCADE; --'),
    "clickhouse-table": ("--clickhouse-table", "events; DROP TABLE events"),
    "clickhouse-table-backquote": ("--clickhouse-table", "events` ; DROP TABLE events; --"),
}


class _Listener:
    """A TCP port that counts the connections made to it (nothing should connect)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.single_pg
def test_hostile_names_are_refused_before_any_connection(migrated: Target) -> None:
    listener = _Listener()
    nowhere = Target(f"postgresql://postgres@127.0.0.1:{listener.port}/app",
                     f"clickhouse://default@127.0.0.1:{listener.port}/app")
    attempts = {
        (name, command, target.pg_dsn == migrated.pg_dsn): subprocess.Popen(
            [*CDC, command, option, value], env=target.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for name, (option, value) in HOSTILE_NAMES.items()
        for command, target in (
            ("run", nowhere), ("migrate", nowhere),
            # Against the real servers too (migrate creates things): refused, and nothing dropped.
            ("migrate", migrated),
        )
    }
    try:
        for (name, command, real), proc in attempts.items():
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 2, f"{name}, {command}, real={real}: exit {proc.returncode}\n{err[-2000:]}"
            assert "invalid" in err and "name" in err, err[-2000:]
    finally:
        listener.close()
    assert listener.accepted == 0, "a connection was made before the name was checked"
    with migrated.pg() as conn:
        conn.execute("SELECT count(*) FROM public.outbox")
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name ~ '^cdc_outbox(_[0-9]+)?$'"
                            ).fetchone() == (TEST_SHARDS,)
    assert migrated.ch().execute("EXISTS TABLE events") == [(1,)]

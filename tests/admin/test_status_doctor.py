"""``cdc status`` grades for monitoring (0/1/2); ``cdc doctor`` lists every precondition with its fix."""

from __future__ import annotations

import json
import time

import pytest
from admin_support import Cli, ok
from cdc.accel import accelerator_status
from servers import PgServer
from support import Target, checked, insert_events, stop, wait_until


def _status(run: Cli, *args: str, **env: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = run("status", "--json", *args, **env)
    return result.exit_code, json.loads(result.stdout)


def _wal(t: Target) -> None:
    with t.pg() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler AS SELECT g FROM generate_series(1, 1000) g")
        conn.execute("INSERT INTO filler SELECT g FROM generate_series(1, 1000) g")


@pytest.mark.single_slot("the one slot's status report; tests/workers/test_sharded_admin.py checks the sharded one")
def test_healthy_streaming_is_exit_0_and_a_stopped_run_is_a_warning(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["s1", "s2"])
    proc = migrated.start("run", "--status-interval", "0.2", "--flush-interval", "0.1")
    try:
        wait_until(lambda: len(migrated.delivered_ids()) == 2, 60, "delivery")
        wait_until(lambda: run("status").exit_code == 0, 30, "status OK")
        code, data = _status(run)
        assert code == 0 and data["status"] == "ok" and data["problems"] == []
        assert data["slot"]["active"] and data["slot"]["pid"]
        assert data["slot"]["last_ack_source"] == "pg_stat_replication.reply_time"
        assert data["clickhouse"]["events"] == 2 and data["clickhouse"]["high_water_mark"]["origin"] == "stream"
        assert ok(run("status")).stdout.startswith("OK:")
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    code, data = _status(run)
    assert code == 1 and "inactive" in data["problems"][0]["message"]


@pytest.mark.single_slot("the one slot's status report; tests/workers/test_sharded_admin.py checks the sharded one")
def test_lag_over_the_thresholds_is_a_warning(migrated: Target, run: Cli) -> None:
    _wal(migrated)
    code, data = _status(run, "--max-lag-bytes", "1")
    assert code == 1
    assert any("bytes behind (threshold 1)" in p["message"] for p in data["problems"]), data["problems"]
    code, data = _status(run, "--max-lag-seconds", "0")
    assert code == 1
    assert data["slot"]["lag_bytes"] > 0


@pytest.mark.single_slot("the one slot's status report; tests/workers/test_sharded_admin.py checks the sharded one")
def test_lag_in_seconds_alone_is_graded_by_max_lag_seconds(migrated: Target, run: Cli) -> None:
    # Something stored: an inactive slot's lag then runs from the last insert on
    # every PostgreSQL (inactive_since is 17+ only).
    with migrated.pg() as conn:
        insert_events(conn, ["lag-1"])
    checked(migrated.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1"))
    _wal(migrated)
    time.sleep(1.5)
    no_bytes_limit = ("--max-lag-bytes", str(2**62))
    _, lenient = _status(run, *no_bytes_limit, "--max-lag-seconds", "3600")
    _, strict = _status(run, *no_bytes_limit, "--max-lag-seconds", "0.5")
    assert strict["slot"]["lag_seconds"] >= 1, strict["slot"]
    # Only the threshold differs between the two: so does exactly one problem.
    extra = [p for p in strict["problems"] if p not in lenient["problems"]]
    assert len(extra) == 1 and extra[0]["level"] == "warning", strict["problems"]
    assert "s behind (threshold 0.5s)" in extra[0]["message"], extra
    assert not [p for p in lenient["problems"] if "behind" in p["message"]], lenient["problems"]


@pytest.mark.single_slot("the one slot's status report; tests/workers/test_sharded_admin.py checks the sharded one")
def test_missing_slot_or_unreachable_clickhouse_is_critical(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
    code, data = _status(run)
    assert code == 2 and data["slot"] == {"name": "cdc_outbox", "exists": False}
    human = run("status")
    assert human.exit_code == 2 and human.stdout.startswith("CRITICAL: replication slot cdc_outbox does not exist")

    ok(run("slot", "create", "--yes"))
    code, data = _status(run, CDC_CLICKHOUSE_URL="clickhouse://default@127.0.0.1:1/nowhere")
    assert code == 2 and data["clickhouse"]["reachable"] is False
    code, data = _status(run, CDC_PG_DSN="postgresql://nobody@127.0.0.1:1/nowhere")
    assert code == 2 and data["postgres"]["reachable"] is False


@pytest.mark.single_slot("the one slot's status report; tests/workers/test_sharded_admin.py checks the sharded one")
def test_an_invalidated_slot_is_critical(migrated: Target, run: Cli, pg_server: PgServer) -> None:
    pg_server.set_config(max_slot_wal_keep_size="1MB")
    try:
        with migrated.pg() as conn:
            for _ in range(4):
                conn.execute("CREATE TABLE IF NOT EXISTS filler (x int)")
                conn.execute("INSERT INTO filler SELECT g FROM generate_series(1, 100) g")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
        code, data = _status(run)
    finally:
        pg_server.set_config(max_slot_wal_keep_size=None)
    assert code == 2 and data["slot"]["invalidated"], data
    assert "invalidated" in data["problems"][0]["message"]
    doctor = run("doctor")
    assert doctor.exit_code == 1 and "is invalidated" in doctor.stdout


@pytest.mark.single_slot("the one slot's status report; tests/workers/test_sharded_admin.py checks the sharded one")
def test_doctor_passes_a_fresh_setup_and_names_the_fix_for_each_failure(migrated: Target, run: Cli) -> None:
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    for name in ("wal_level", "max_replication_slots", "max_wal_senders", "role REPLICATION", "outbox columns",
                 "outbox SELECT", "publication", "slot", "clickhouse", "clickhouse schema", "heartbeats"):
        assert checks[name]["status"] == "PASS", checks[name]
    assert checks["max_slot_wal_keep_size"]["status"] == "WARN"
    assert "max_slot_wal_keep_size" in checks["max_slot_wal_keep_size"]["fix"]
    assert checks["accelerator"]["detail"] == accelerator_status()  # which path runs: compiled, or pure Python and why

    with migrated.pg() as conn:
        conn.execute("ALTER PUBLICATION cdc_outbox SET (publish_via_partition_root = false)")
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
    migrated.ch().execute("DROP TABLE events_dead_letter")
    result = run("doctor", "--json")
    assert result.exit_code == 1
    failed = {c["check"]: c for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"}
    assert set(failed) == {"publication", "slot", "clickhouse schema"}, failed
    assert failed["publication"]["fix"] == 'ALTER PUBLICATION "cdc_outbox" SET (publish_via_partition_root = true);'
    assert "--create-slot" in failed["slot"]["fix"]
    assert "events_dead_letter is missing" in failed["clickhouse schema"]["detail"]
    human = run("doctor").stdout
    assert "FAIL  publication" in human and "fix: ALTER PUBLICATION" in human


def test_doctor_fails_a_role_without_replication_or_select(migrated: Target, run: Cli, pg_server: PgServer) -> None:
    with migrated.pg() as conn:
        conn.execute("CREATE ROLE doc_reader LOGIN PASSWORD 'doc-reader-pw-1'")
        dbname = conn.info.dbname
    try:
        result = run("doctor", "--json", CDC_PG_DSN=pg_server.dsn(dbname, "doc_reader", "doc-reader-pw-1"))
        assert result.exit_code == 1
        checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
        assert checks["role REPLICATION"]["fix"] == 'ALTER ROLE "doc_reader" REPLICATION;  -- as a superuser'
        assert checks["outbox SELECT"]["fix"] == 'GRANT SELECT ON "public"."outbox" TO "doc_reader";'
        assert "doc-reader-pw-1" not in result.stdout + result.stderr
        assert checks["heartbeats"]["status"] == "PASS"  # PUBLIC may, by default
        with migrated.pg() as conn:
            conn.execute("DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc "
                         "WHERE proname = 'pg_logical_emit_message' LOOP "
                         "EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); END LOOP; END $$")
        result = run("doctor", "--json", CDC_PG_DSN=pg_server.dsn(dbname, "doc_reader", "doc-reader-pw-1"))
        heartbeats = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["heartbeats"]
        assert heartbeats["status"] == "WARN" and 'TO "doc_reader"' in heartbeats["fix"]
    finally:
        with migrated.pg() as conn:
            conn.execute("DROP OWNED BY doc_reader")
            conn.execute("DROP ROLE doc_reader")

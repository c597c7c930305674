"""The monitor thread, against a real PostgreSQL: the slot's lag, heartbeats in the slot, and a role that may
not emit them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
import structlog
from psycopg import sql
from servers import PgServer
from support import wait_until

from cdc.metrics import PipelineMetrics, heartbeat
from cdc.pipeline.monitor import SlotMonitor

SLOT = "cdc_monitor_test"
# Every overload (PostgreSQL 17 added a `flush` argument), as a DBA who locks the function down would.
REVOKE_EMIT = """
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'pg_logical_emit_message' LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
END $$"""


@pytest.fixture
def slot(pg_dsn: str) -> Iterator[str]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
        conn.execute("CREATE PUBLICATION cdc_monitor_test")  # of no table: only messages come through
    yield pg_dsn
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))


@pytest.fixture
def plain_role(slot: str, pg_server: PgServer) -> Iterator[str]:
    """A DSN of a role with LOGIN only, in the slot's database."""
    name, password = f"monitor_{secrets.token_hex(4)}", secrets.token_hex(8)
    with psycopg.connect(slot, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        dbname = conn.info.dbname
    yield pg_server.dsn(dbname, user=name, password=password)
    with psycopg.connect(slot, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def monitor(dsn: str, metrics: PipelineMetrics, heartbeat_interval: float) -> SlotMonitor:
    return SlotMonitor(connect=lambda: psycopg.connect(dsn, autocommit=True), slot=SLOT, metrics=metrics,
                       log=structlog.get_logger(), status_interval=0.2, heartbeat_interval=heartbeat_interval)


def heartbeats_in_slot(dsn: str) -> list[float]:
    """Emit times of the heartbeats the slot holds, read the way pgoutput sends them ('M' messages)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        changes = conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
            "'publication_names', 'cdc_monitor_test', 'messages', 'true')", (SLOT,)
        ).fetchall()
    found = []
    for (data,) in changes:
        data = bytes(data)
        if data[:1] == b"M" and data[1] == 1:  # transactional
            prefix_end = data.index(b"\0", 10)
            if data[10:prefix_end] == heartbeat.PREFIX.encode():
                content = data[prefix_end + 5:]
                at = heartbeat.emitted_at(content, SLOT)
                assert at is not None
                found.append(at)
    return found


def test_it_reads_the_slot_lag_and_writes_heartbeats_into_the_slot(slot: str, plain_role: str) -> None:
    metrics = PipelineMetrics(slot=SLOT, publication="p", sink="clickhouse")
    started = time.time()
    m = monitor(plain_role, metrics, heartbeat_interval=0.3)
    with structlog.testing.capture_logs() as logs:
        m.start()
        try:
            wait_until(lambda: len(heartbeats_in_slot(slot)) >= 2, 60, "two heartbeats in the slot")
            # The heartbeats are WAL the slot has not confirmed: the lag grows past them.
            wait_until(lambda: (metrics.slot_lag_bytes or 0) > 0, 60, "a lag behind the heartbeats")
        finally:
            m.close()
    assert metrics.heartbeat.interval == 0.3
    assert all(started <= at <= time.time() for at in heartbeats_in_slot(slot))
    assert not [entry for entry in logs if entry["log_level"] == "warning"], logs


def test_a_heartbeat_interval_of_zero_writes_no_heartbeats(slot: str) -> None:
    metrics = PipelineMetrics(slot=SLOT, publication="p", sink="clickhouse")
    m = monitor(slot, metrics, heartbeat_interval=0)
    m.start()
    try:
        wait_until(lambda: metrics.slot_lag_bytes is not None, 60, "the lag")
        time.sleep(1.0)  # five status intervals
    finally:
        m.close()
    assert heartbeats_in_slot(slot) == []
    assert metrics.heartbeat.interval == 0.0 and metrics.heartbeat.last_stored is None


def test_the_wal_the_slot_may_still_hold_is_read_only_where_the_server_limits_it(
    slot: str, pg_server: PgServer
) -> None:
    metrics = PipelineMetrics(slot=SLOT, publication="p", sink="clickhouse")
    unlimited = monitor(slot, metrics, heartbeat_interval=0)
    unlimited.start()
    try:
        wait_until(lambda: metrics.slot_lag_bytes is not None, 60, "the lag")
    finally:
        unlimited.close()
    assert metrics.slot_safe_wal_bytes is None  # no limit: nothing to run out of
    pg_server.set_config(max_slot_wal_keep_size="1GB")
    try:
        limited = monitor(slot, metrics, heartbeat_interval=0)
        limited.start()
        try:
            wait_until(lambda: metrics.slot_safe_wal_bytes is not None, 60, "the safe WAL size")
        finally:
            limited.close()
    finally:
        pg_server.set_config(max_slot_wal_keep_size=None)
    # The limit, give or take the WAL segments the server counts it in.
    assert metrics.slot_safe_wal_bytes is not None
    assert (1 << 30) - (64 << 20) < metrics.slot_safe_wal_bytes < (1 << 30) + (64 << 20)


def test_a_role_that_may_not_emit_messages_is_told_once_and_the_lag_is_still_read(
    slot: str, plain_role: str
) -> None:
    with psycopg.connect(slot, autocommit=True) as conn:
        conn.execute(REVOKE_EMIT)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")  # WAL the slot has not confirmed
    metrics = PipelineMetrics(slot=SLOT, publication="p", sink="clickhouse")
    m = monitor(plain_role, metrics, heartbeat_interval=0.1)
    with structlog.testing.capture_logs() as logs:
        m.start()
        try:
            wait_until(lambda: (metrics.slot_lag_bytes or 0) > 0, 60, "the lag")
            time.sleep(1.0)  # several heartbeat intervals: still said only once
        finally:
            m.close()
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("heartbeats are off: the role may not emit logical decoding messages")
    assert "GRANT EXECUTE ON FUNCTION pg_logical_emit_message" in warnings[0]
    assert metrics.heartbeat.interval == 0.0
    assert heartbeats_in_slot(slot) == []


def test_postgresql_going_away_is_said_once_and_the_monitor_carries_on(slot: str) -> None:
    metrics = PipelineMetrics(slot=SLOT, publication="p", sink="clickhouse")
    attempts = []

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise psycopg.OperationalError("connection refused")
        return psycopg.connect(slot, autocommit=True)

    m = SlotMonitor(connect=connect, slot=SLOT, metrics=metrics, log=structlog.get_logger(), status_interval=0.1,
                    heartbeat_interval=0)
    with structlog.testing.capture_logs() as logs:
        m.start()
        try:
            wait_until(lambda: metrics.slot_lag_bytes is not None, 60, "the lag once connected")
        finally:
            m.close()
    events = [(entry["log_level"], entry["event"]) for entry in logs]
    assert events == [("warning", "monitor cannot reach PostgreSQL, will try again"),
                      ("info", "monitor reconnected to PostgreSQL")]

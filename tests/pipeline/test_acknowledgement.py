"""What the slot is told: stored rows only, and the server's position when nothing of ours is pending."""

from __future__ import annotations

import signal
import socket
import time

from support import Target, checked, insert_events, stop, wait_until


def test_idle_outbox_on_a_busy_database_does_not_hold_wal_behind_the_slot(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    proc = t.start("run", "--status-interval", "1")
    try:
        with t.pg() as conn:
            conn.execute("CREATE TABLE busy (x int, pad text)")
            for _ in range(20):
                conn.execute("INSERT INTO busy SELECT g, repeat('b', 200) FROM generate_series(1, 2000) g")
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 60, "the idle slot to follow the server's position")
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    assert t.delivered_ids() == []


def test_sigterm_flushes_the_buffer_acknowledges_and_exits_zero(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    # A flush interval far away: only the shutdown can have flushed these rows.
    proc = t.start("run", "--flush-interval", "3600")
    # Streaming, so past start-up: a signal during the interpreter's own
    # start-up would end it before any handler exists.
    wait_until(t.slot_active, 120, "cdc run to start streaming")
    with t.pg() as conn:
        insert_events(conn, [f"e{i}" for i in range(100)])
    lsn = t.current_lsn()
    time.sleep(2)  # let the rows reach the buffer
    assert not t.slot_reached(lsn), "nothing may be acknowledged before it is stored"
    code, err = stop(proc, signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert sorted(t.delivered_ids()) == sorted(f"e{i}" for i in range(100))
    assert t.slot_reached(lsn)


def test_sigterm_while_clickhouse_never_answers_at_start_up_exits_zero_at_once(pg_dsn: str) -> None:
    # A server that accepts the connection and never says hello: cdc would
    # wait out its whole receive timeout (minutes) unless the signal ends start-up.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        t = Target(pg_dsn, f"clickhouse://127.0.0.1:{port}/default")
        proc = t.start("run")
        silent.settimeout(120)
        accepted, _ = silent.accept()  # cdc is now inside start-up, its handlers installed
        with accepted:
            code, err = stop(proc, signal.SIGTERM, timeout=30)
    assert code == 0, err[-2000:]
    assert "stopped during start-up; nothing was read or acknowledged" in err


def test_retried_event_after_a_restart_is_still_recognised_as_a_duplicate(pg_dsn: str, sink_url: str) -> None:
    t = Target(pg_dsn, sink_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        insert_events(conn, ["order-1", "order-2"])
    checked(t.cdc("run", "--until-lsn", "current"))
    with t.pg() as conn:
        insert_events(conn, ["order-2", "order-3"])  # the application retried order-2
    second = checked(t.cdc("run", "--until-lsn", "current"))
    assert sorted(t.delivered_ids()) == ["order-1", "order-2", "order-3"]
    assert '"duplicates":1' in second.stderr.replace(" ", "")

"""PostgreSQL restarts (fast, immediate) or ends our walsender mid-stream: reconnect with backoff, resume exactly.

An immediate shutdown is a crash for the server: after recovery the slot may
resume from an older confirmed position than we last sent, and re-send rows
that are already in ClickHouse; the high-water mark must skip them (dedup is
off here, so it alone stands between a reconnect and duplicates).
"""

from __future__ import annotations

import time

import pytest
from fault_support import CdcProcess, Writer, assert_exactly, catch_up, fault_rng, outbox_ids, report, walsender_pid
from servers import PgServer
from support import Target

TUNING = (
    "--dedup-window", "0", "--retry-initial", "0.1", "--retry-max", "1", "--batch-rows", "2000",
    "--flush-interval", "0.2", "--status-interval", "0.5",
)
FAULTS = ("restart-fast", "restart-immediate", "terminate-walsender")


def _inject(fault: str, t: Target, pg_server: PgServer) -> None:
    if fault == "terminate-walsender":
        pid = walsender_pid(t)
        with t.pg() as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        return
    if not pg_server.can_restart:
        pytest.skip("this PostgreSQL is not ours to restart")
    pg_server.restart(fault.removeprefix("restart-"))


def _lost_and_back(run: CdcProcess, times: int) -> None:
    run.wait_for("replication connection lost, reconnecting", timeout=60, count=times)
    # One "streaming" for the first connection, one per reconnection.
    run.wait_for("streaming", timeout=60, count=times + 1)


@pytest.mark.single_slot("counts one stream's reconnections; sharded restarts: tests/workers/test_sharded_faults.py")
@pytest.mark.parametrize("fault", FAULTS)
def test_postgres_fault_mid_stream_resumes_without_loss_or_duplicates(
    migrated: Target, pg_server: PgServer, fault: str
) -> None:
    t = migrated
    writer = Writer(t, "r", seed=f"pg-{fault}", max_rows=20, rollback_every=5)
    run = CdcProcess(t, "run", *TUNING)
    writer.start()
    try:
        run.wait_for("flushed")
        time.sleep(0.5)
        _inject(fault, t, pg_server)
        _lost_and_back(run, 1)
        time.sleep(1.0)  # and the application keeps writing
    finally:
        writer.stop()
    catch_up(t)
    code = run.stop()
    assert code == 0, run.tail()

    lost = run.events("replication connection lost, reconnecting")
    assert all(float(e["retry_in"]) <= 1.0 for e in lost), lost  # type: ignore[arg-type]
    assert sorted(outbox_ids(t)) == sorted(writer.committed)
    assert_exactly(t, writer.committed)


@pytest.mark.soak
def test_many_postgres_faults_in_a_row(migrated: Target, pg_server: PgServer) -> None:
    if not pg_server.can_restart:
        pytest.skip("this PostgreSQL is not ours to restart")
    t, rng, rounds = migrated, fault_rng("pg-cycle"), 24
    writer = Writer(t, "c", seed="pg-cycle", max_rows=20, rollback_every=5)
    run = CdcProcess(t, "run", *TUNING)
    writer.start()
    try:
        run.wait_for("flushed")
        for n in range(1, rounds + 1):
            time.sleep(rng.uniform(0.5, 3.0))
            _inject(FAULTS[n % len(FAULTS)], t, pg_server)
            _lost_and_back(run, n)
    finally:
        writer.stop()
    catch_up(t)
    code = run.stop()
    assert code == 0, run.tail()
    assert sorted(outbox_ids(t)) == sorted(writer.committed)
    checked_rows = assert_exactly(t, writer.committed)
    report(
        f"postgres-faults-{pg_server.kind}", faults=rounds, events_checked=checked_rows,
        in_doubt_commits=writer.in_doubt, peak_rss_mb=round(run.peak_rss_mb, 1),
    )

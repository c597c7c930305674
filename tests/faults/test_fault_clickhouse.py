"""ClickHouse goes away, or refuses the INSERT: retry, hold back (memory and acknowledgement), catch up.

These faults are in ClickHouse, not PostgreSQL: they run against the first
PostgreSQL kind only (single_pg).
"""

from __future__ import annotations

import time
from typing import cast
from urllib.parse import urlsplit

import pytest
from fault_support import (
    AckWatch, CdcProcess, Writer, assert_exactly, catch_up, poll, report, slot_pid, walsender_pid,
)
from servers import ClickHouse
from support import Target, acknowledged_before_stored, insert_events, parse_lsn_text, stored_positions

RSS_LIMIT_MB = 300
# Short retries so the outage lasts many times the backoff cap.
RETRY = ("--retry-initial", "0.1", "--retry-max", "1")
TUNING = ("--batch-rows", "2000", "--flush-interval", "0.2", "--status-interval", "0.5", *RETRY)
PAYLOAD = 8000  # bytes per row during the outage: far more comes in than memory may hold
# Lowered for the test database only (the default, 60 s, outlasts the outage).
WAL_SENDER_TIMEOUT_SECONDS = 5
WAL_SENDER_TIMEOUT = f"{WAL_SENDER_TIMEOUT_SECONDS}s"

pytestmark = pytest.mark.single_pg


@pytest.fixture
def restartable_clickhouse(clickhouse_server: ClickHouse) -> ClickHouse:
    if not clickhouse_server.can_restart:
        pytest.skip("this ClickHouse is not ours to stop")
    return clickhouse_server


def _database(t: Target) -> str:
    return urlsplit(t.clickhouse_url).path.lstrip("/")


@pytest.mark.parametrize(
    "outage", [pytest.param(8.0, id="8s"), pytest.param(90.0, id="90s", marks=pytest.mark.soak)]
)
def test_clickhouse_down_retries_holds_back_and_catches_up(
    migrated: Target, restartable_clickhouse: ClickHouse, outage: float
) -> None:
    t, ch = migrated, restartable_clickhouse
    # The server's patience must run out during the outage, or "keeps answering
    # the server" proves nothing: our walsender gives up after this much silence.
    with t.pg() as conn:
        conn.execute(f"ALTER DATABASE \"{conn.info.dbname}\" SET wal_sender_timeout = '{WAL_SENDER_TIMEOUT}'")
    assert outage > WAL_SENDER_TIMEOUT_SECONDS + 2
    writer = Writer(t, "o", seed=f"outage-{outage}", max_rows=20, pause=0.005, payload_bytes=PAYLOAD)
    run = CdcProcess(t, "run", *TUNING, "--batch-bytes", "1000000")
    watch = AckWatch(t)
    writer.start()
    watch.start()
    try:
        run.wait_for("flushed")
        walsender = walsender_pid(t)
        rss_before_mb = run.sample_rss() / 1024
        ch.stop()
        stopped_at = time.time()
        first = run.wait_for("insert failed, will retry", timeout=30)
        # What was stored before the stop may still be on its way to the slot.
        time.sleep(1.5)
        frozen = t.confirmed_lsn()
        rows_before = writer.committed_count
        samples = cast(
            list[tuple[str | None, int | None]], poll(outage, 0.5, lambda: (t.confirmed_lsn(), slot_pid(t)))
        )
        rows_written_during = writer.committed_count - rows_before
        rss_during_mb = run.sample_rss() / 1024
        failures = run.events("insert failed, will retry")
        assert run.proc.poll() is None, f"cdc gave up during the outage:\n{run.tail()}"
    finally:
        restarted_at = time.time()
        if not getattr(ch, "running", True):
            ch.start()
    try:
        time.sleep(1.0)  # the application keeps writing after ClickHouse is back
    finally:
        writer.stop()
    catch_up(t, timeout=120)
    walsender_after = slot_pid(t)
    code = run.stop()
    watched = watch.stop()
    assert code == 0, run.tail()

    assert {lsn for lsn, _ in samples} == {frozen}, f"the slot moved while ClickHouse was down: {samples}"
    # Status updates kept the walsender alive through an outage longer than its timeout.
    assert {pid for _, pid in samples} == {walsender} and walsender_after == walsender, (
        f"the walsender changed ({walsender} -> {samples} -> {walsender_after}): the server gave up on us"
    )
    assert not run.events("replication connection lost, reconnecting"), run.tail()
    # The slot never confirmed a transaction ClickHouse did not hold: while it
    # was down, ClickHouse held what was inserted before the stop.
    final = stored_positions(t)
    between = (stopped_at + restarted_at) / 2
    before_stop = max(((lsn, seq) for lsn, seq, at in final if at < between), default=None)
    during = [(parse_lsn_text(str(lsn)), before_stop) for lsn, _ in samples]
    ahead = acknowledged_before_stored(final, [*watched, *during])
    assert not ahead, f"acknowledged before stored: {ahead[:5]}"
    assert len(watched) > 20, "too few samples of the acknowledgement order"
    # Every retry stays one JSON line: no library traceback in between.
    assert not [line for line in run.stderr_lines if not line.startswith("{")], run.tail()
    address = f"ClickHouse at {ch.host}:{ch.port}"
    assert address in str(first["error"]), first
    assert len(failures) >= outage / 1.0 - 1, f"{len(failures)} retries in {outage}s with a 1s cap"
    assert max(float(f["retry_in"]) for f in failures) <= 1.0  # type: ignore[arg-type]
    mb_written_during = rows_written_during * PAYLOAD / 2**20
    assert mb_written_during > 30, "too little came in during the outage to prove backpressure"
    assert run.peak_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.peak_rss_mb:.0f} MB"
    # A buffer that grew with the backlog would have grown by about what came in.
    assert rss_during_mb - rss_before_mb < 20, (
        f"RSS grew from {rss_before_mb:.0f} to {rss_during_mb:.0f} MB while {mb_written_during:.0f} MB came in"
    )
    checked_rows = assert_exactly(t, writer.committed)
    report(
        f"clickhouse-outage-{outage:.0f}s", outage_seconds=outage, retries=len(failures),
        rows_committed_during_outage=rows_written_during, payload_mb_during_outage=round(mb_written_during, 1),
        rss_before_outage_mb=round(rss_before_mb, 1), peak_rss_mb=round(run.peak_rss_mb, 1),
        rss_at_end_of_outage_mb=round(rss_during_mb, 1), events_checked=checked_rows,
        acknowledgement_samples=len(watched) + len(during),
    )


def test_insert_error_is_logged_with_its_text_and_retried_until_fixed(
    migrated: Target, clickhouse_server: ClickHouse
) -> None:
    t, db = migrated, _database(migrated)
    run = CdcProcess(t, "run", *TUNING)
    committed: list[str] = []
    try:
        with t.pg() as conn:
            for n in range(20):
                ids = [f"before-{n}-{r}" for r in range(10)]
                insert_events(conn, ids)
                committed += ids
        catch_up(t)
        ddl = clickhouse_server.execute(f"SHOW CREATE TABLE {db}.events")[0][0]
        clickhouse_server.execute(f"DROP TABLE {db}.events")
        with t.pg() as conn:
            for n in range(20):
                ids = [f"during-{n}-{r}" for r in range(10)]
                insert_events(conn, ids)
                committed += ids
        failure = run.wait_for("insert failed, will retry", timeout=30)
        time.sleep(1.0)
        frozen = t.confirmed_lsn()
        samples = poll(3.0, 0.5, t.confirmed_lsn)
        clickhouse_server.execute(ddl)
        with t.pg() as conn:
            insert_events(conn, ["after-fix"])
            committed.append("after-fix")
        catch_up(t)
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    error = str(failure["error"])
    assert f"{db}.events" in error and "doesn't exist" in error, error
    assert "Stack trace" not in error and "\n" not in error
    assert set(samples) == {frozen}, "the slot moved while the INSERT failed"
    assert_exactly(t, committed)

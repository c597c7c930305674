"""A real walsender: reads return many messages per wake-up, bounded by count and by size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from support import wait_until

from cdc.pg.replication import ReplicationConnection

ROWS = 100
PAYLOAD = 1000


@pytest.fixture
def streaming(pg_dsn: str) -> Iterator[ReplicationConnection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        conn.execute("INSERT INTO t SELECT g, repeat('x', %s) FROM generate_series(1, %s) g", (PAYLOAD, ROWS))
        end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        repl = ReplicationConnection.connect(pg_dsn, application_name="test-read")
        repl.start_replication("s", "0/0", {"proto_version": "1", "publication_names": '"p"'})
        # Let the walsender send what it can before the first read, so reads find a backlog.
        wait_until(lambda: conn.execute(
            "SELECT coalesce(bool_or(sent_lsn >= %s), false) FROM pg_stat_replication WHERE application_name = 'test-read'",
            end,
        ).fetchone() == (True,), timeout=10, what="the walsender to send the backlog", interval=0.05)
    try:
        yield repl
    finally:
        repl.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('s')")


def _inserts(frames: list[memoryview]) -> int:
    return sum(1 for frame in frames if frame[0] == ord("w") and frame[25] == ord("I"))


def test_a_read_stops_at_its_size_bound_just_past_it(streaming: ReplicationConnection) -> None:
    bound = 10 * PAYLOAD
    seen = reads_at_bound = 0
    while seen < ROWS:
        frames = streaming.read(4096, 5.0, max_bytes=bound)
        sizes = [len(frame) for frame in frames]
        assert sum(sizes[:-1]) < bound  # the message that crossed the bound is the last one
        reads_at_bound += sum(sizes) >= bound
        seen += _inserts(frames)
    assert reads_at_bound >= 2  # 100 KB were waiting: most reads stopped at the bound


def test_a_read_stops_at_its_message_count_and_the_next_read_goes_on(streaming: ReplicationConnection) -> None:
    seen = 0
    while seen < ROWS:
        frames = streaming.read(7, 5.0)
        assert len(frames) <= 7
        seen += _inserts(frames)
    assert seen == ROWS


def _caught_up_then_one_more_row(streaming: ReplicationConnection, pg_dsn: str) -> threading.Thread:
    """Reads the stream to its end, then starts a thread that inserts one row 0.2 s later."""
    seen = 0
    while seen < ROWS:
        seen += _inserts(streaming.read(4096, 5.0))
    while streaming.read(4096, 0.2):  # caught up: nothing left but keepalives
        pass

    def write_later() -> None:
        time.sleep(0.2)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO t VALUES (%s, 'late')", (ROWS + 1,))

    writer = threading.Thread(target=write_later)
    writer.start()
    return writer


def test_data_arriving_near_the_timeout_is_read_by_the_timeout_whatever_the_settle(
    streaming: ReplicationConnection, pg_dsn: str,
) -> None:
    writer = _caught_up_then_one_more_row(streaming, pg_dsn)
    started = time.monotonic()
    frames: list[memoryview] = []
    while not _inserts(frames) and time.monotonic() - started < 20:
        # The settle would hold the read for a minute; the batch due at the timeout cannot wait for it.
        frames = streaming.read(4096, 1.0, settle=60.0)
    writer.join()
    assert _inserts(frames) == 1
    assert time.monotonic() - started < 20


def test_a_read_that_settles_says_when_its_data_arrived_before_the_settle(
    streaming: ReplicationConnection, pg_dsn: str,
) -> None:
    writer = _caught_up_then_one_more_row(streaming, pg_dsn)
    started = returned = time.monotonic()
    frames: list[memoryview] = []
    while not _inserts(frames) and returned - started < 20:
        frames = streaming.read(4096, 5.0, settle=0.5)
        returned = time.monotonic()
    writer.join()
    assert _inserts(frames) == 1
    # The batch these rows open counts its age from arrived_at, so the settle delays no flush.
    assert started < streaming.arrived_at <= returned - 0.5

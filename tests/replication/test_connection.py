"""A real walsender: reads return many messages per wake-up, bounded by count and by size."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from cdc.replication.connection import ReplicationConnection

ROWS = 200
PAYLOAD = 1000


@pytest.fixture
def streaming(pg_dsn: str) -> Iterator[ReplicationConnection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        conn.execute("INSERT INTO t SELECT g, repeat('x', %s) FROM generate_series(1, %s) g", (PAYLOAD, ROWS))
    repl = ReplicationConnection.connect(pg_dsn)
    repl.start_replication("s", "0/0", {"proto_version": "1", "publication_names": '"p"'})
    try:
        yield repl
    finally:
        repl.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('s')")


def _inserts(frames: list[memoryview]) -> int:
    return sum(1 for frame in frames if frame[0] == ord("w") and frame[25] == ord("I"))


def test_a_read_stops_at_its_size_bound_just_past_it(streaming: ReplicationConnection) -> None:
    bound = 20 * PAYLOAD
    seen = reads_at_bound = 0
    while seen < ROWS:
        frames = streaming.read(4096, 5.0, max_bytes=bound)
        sizes = [len(frame) for frame in frames]
        assert sum(sizes[:-1]) < bound  # the message that crossed the bound is the last one
        reads_at_bound += sum(sizes) >= bound
        seen += _inserts(frames)
    assert reads_at_bound >= 2  # 200 KB were waiting: most reads stopped at the bound


def test_a_read_stops_at_its_message_count_and_the_next_read_goes_on(streaming: ReplicationConnection) -> None:
    seen = 0
    while seen < ROWS:
        frames = streaming.read(7, 5.0)
        assert len(frames) <= 7
        seen += _inserts(frames)
    assert seen == ROWS

"""What sharding promises about single rows, on real PostgreSQL and ClickHouse: dedup stays exact per shard and
in total, each shard stores its rows in commit order, and a slot some other walsender holds is waited for calmly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from shard_support import RUN, CdcProcess, assert_exactly, catch_up_all, stop_all, streamed
from support import Target, checked, insert_events, wait_until

from cdc.shards.layout import shards_of

SHARDS = 4


@pytest.fixture
def sharded(pg_dsn: str, clickhouse_url: str) -> Iterator[Target]:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", str(SHARDS)))
    yield t


def shard_of(t: Target, modulus: int = SHARDS) -> dict[str, int]:
    with t.pg() as conn:
        rows = conn.execute("SELECT DISTINCT unique_id, (shard_hash %% %s)::int FROM outbox", (modulus,)).fetchall()
    return {str(uid): int(k) for uid, k in rows}  # type: ignore[call-overload]


def stored(t: Target) -> list[tuple[str, int]]:
    """(unique_id, stream) of every event row ever inserted (the progress ledger: duplicates show)."""
    return [(str(u), int(s)) for u, s in t.ch().execute(
        "SELECT unique_id, stream FROM events_cdc_progress WHERE unique_id != '' ORDER BY commit_lsn, commit_seq")]


def test_a_repeated_unique_id_is_stored_once_under_its_own_shards_stream(sharded: Target) -> None:
    t = sharded
    first, again = [f"u-{i}" for i in range(80)], [f"u-{i}" for i in range(0, 80, 2)]
    later = [f"v-{i}" for i in range(20)]
    with t.pg() as conn:
        insert_events(conn, first)
        insert_events(conn, again)  # the application sent these again: same unique_id, new outbox rows
    run = checked(t.cdc("run", "--until-lsn", "current"))  # deduplication on, as by default
    assert "worker joined" in run.stderr
    with t.pg() as conn:
        # After a restart, each shard's window is rebuilt from ClickHouse, from its own stream.
        insert_events(conn, [f"u-{i}" for i in range(1, 80, 3)] + later)
    checked(t.cdc("run", "--until-lsn", "current"))
    rows = stored(t)
    twice = [uid for uid, n in Counter(uid for uid, _ in rows).items() if n > 1]
    assert not twice, f"stored twice: {twice[:5]}"
    assert sorted(uid for uid, _ in rows) == sorted(first + later)
    streams = {shard.index: shard.stream for shard in shards_of("cdc_outbox", "cdc_outbox", 1, SHARDS)}
    home = shard_of(t)
    assert all(stream == streams[home[uid]] for uid, stream in rows)
    assert len({stream for _, stream in rows}) == SHARDS
    letters = t.ch().execute("SELECT count() FROM events_dead_letter")[0][0]
    assert letters == 0


def test_each_shard_stores_its_rows_in_commit_order(sharded: Target) -> None:
    t = sharded
    a_ids, b_ids, c_ids = ([f"{p}-{i}" for i in range(24)] for p in "abc")
    a = psycopg.connect(t.pg_dsn)
    b = psycopg.connect(t.pg_dsn)
    try:
        for a_id, b_id in zip(a_ids, b_ids):  # interleaved inserts, a begun first
            a.execute("INSERT INTO outbox (unique_id, event_type) VALUES (%s, 'order')", (a_id,))
            b.execute("INSERT INTO outbox (unique_id, event_type) VALUES (%s, 'order')", (b_id,))
        b.commit()
        a.commit()
    finally:
        a.close()
        b.close()
    with t.pg() as conn:
        insert_events(conn, c_ids)
    checked(t.cdc(*RUN, "--until-lsn", "current"))
    home = shard_of(t)
    committed = b_ids + a_ids + c_ids  # commit order: b, then a, then c; each in insert order
    by_stream: dict[int, list[str]] = {}
    for uid, stream in stored(t):
        by_stream.setdefault(stream, []).append(uid)
    streams = {shard.stream: shard.index for shard in shards_of("cdc_outbox", "cdc_outbox", 1, SHARDS)}
    assert set(by_stream) == set(streams), "every shard got rows"
    for stream, uids in by_stream.items():
        assert uids == [uid for uid in committed if home[uid] == streams[stream]]


def test_a_worker_meeting_an_active_slot_waits_calmly_then_streams_it(sharded: Target) -> None:
    t = sharded
    holder = psycopg.connect(t.pg_dsn + "?replication=database", autocommit=True)
    holder.pgconn.exec_(b"START_REPLICATION SLOT cdc_outbox_0 LOGICAL 0/0 (proto_version '1', "
                        b"publication_names 'cdc_outbox_0')")
    worker = CdcProcess(t, *RUN)
    ids = [f"s-{i}" for i in range(60)]
    try:
        with t.pg() as conn:
            insert_events(conn, ids[:30])
        waiting = worker.wait_for("slot is active: waiting for its walsender to end", timeout=90)
        assert waiting["level"] == "info" and waiting["slot"] == "cdc_outbox_0"
        wait_until(lambda: streamed(t) >= {"cdc_outbox_1", "cdc_outbox_2", "cdc_outbox_3"}, 60,
                   "the other 3 shards streamed meanwhile")
        holder.close()
        wait_until(lambda: len(streamed(t)) == SHARDS, 60, "cdc_outbox_0 streamed once let go")
        with t.pg() as conn:
            insert_events(conn, ids[30:])
        catch_up_all(t)
    finally:
        holder.close()
        stop_all([worker])
    assert len(worker.events("slot is active: waiting for its walsender to end")) == 1
    assert not [e for e in worker.events() if e.get("level") in ("warning", "error")], worker.tail()
    assert_exactly(t, ids)

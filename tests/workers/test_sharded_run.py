"""``cdc run`` on a sharded outbox, end to end: several workers, real PostgreSQL and ClickHouse, faults.

"Exactly the committed set" is checked as in tests/faults: the ids in ClickHouse's
progress ledger (one row per inserted event, so a duplicate shows) equal the ids
PostgreSQL committed, each once. Deduplication is off (``--dedup-window 0``), so
each shard's own high-water mark alone must prevent duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from shard_support import RUN, CdcProcess, Writer, all_acknowledged, assert_exactly, owned_by, stop_all, streamed
from servers import ClickHouse
from support import Target, checked, insert_events, wait_until


@pytest.fixture
def sharded(pg_dsn: str, clickhouse_url: str) -> Iterator[Target]:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "8"))
    yield t


def test_three_workers_on_eight_shards_survive_a_kill_9_with_exactly_the_committed_set(sharded: Target) -> None:
    t = sharded
    writer = Writer(t, "k", seed="sharded-kill", max_rows=12, rollback_every=6)
    workers = [CdcProcess(t, *RUN) for _ in range(3)]
    try:
        writer.start()
        wait_until(lambda: len(streamed(t)) == 8, 90, "all 8 shards streamed")
        # Every worker listed with its share: the third may join after the first two took all 8.
        # Those above ceil(8 / 3) hand shards over after a flush: under load that takes a while.
        wait_until(lambda: sorted(i for s in owned_by(t).values() for i in s) == list(range(8))
                   and set(owned_by(t)) == {w.pid for w in workers}
                   and all(len(s) <= 3 for s in owned_by(t).values()), 60,
                   "cdc_workers to list the 8 shards among the 3 workers, at most 3 each")
        time.sleep(2)
        victim = workers[0]
        before = owned_by(t)
        victim.kill()
        killed = time.monotonic()
        wait_until(lambda: len(streamed(t)) == 8, 60, "the survivors to stream all 8 shards again")
        takeover = time.monotonic() - killed
        time.sleep(2)
        writer.stop()
        end = t.current_lsn()
        wait_until(lambda: all_acknowledged(t, end), 120, "every shard to acknowledge the writer's last commit")
    finally:
        stop_all(workers[1:])
    assert_exactly(t, writer.committed, writer.rolled_back)
    assert before.get(victim.pid), "the killed worker owned shards"
    print(f"takeover after kill -9: {takeover:.1f}s; {len(writer.committed)} events")


@pytest.mark.every_pg  # two workers through row-filtered slots on the oldest PostgreSQL we shard
def test_two_workers_drain_four_shards_up_to_an_lsn_and_leave(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    ids = [f"d-{i}" for i in range(3000)]
    with t.pg() as conn:
        for k in range(0, len(ids), 500):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("INSERT INTO outbox (unique_id, event_type) VALUES (%s, 'drain')",
                                [(uid,) for uid in ids[k:k + 500]])
    end = t.current_lsn()
    workers = [CdcProcess(t, *RUN, "--until-lsn", end) for _ in range(2)]
    for worker in workers:
        assert worker.wait(180) == 0, worker.tail()
        assert worker.events("every shard has reached the LSN to stop at: leaving")
    assert all_acknowledged(t, end)
    assert_exactly(t, ids, [])


def test_a_worker_with_a_wrong_clickhouse_password_ends_at_start_up_in_one_line(
    pg_dsn: str, clickhouse_url: str, clickhouse_server: ClickHouse,
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "2"))
    database = urlsplit(clickhouse_url).path.lstrip("/")
    wrong = f"clickhouse://nobody:not-the-password@127.0.0.1:{clickhouse_server.port}/{database}"
    result = Target(pg_dsn, wrong).cdc("run", "--until-lsn", "current", timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cdc: error: ClickHouse at ") and "refused user 'nobody'" in last, last
    assert "not-the-password" not in result.stdout + result.stderr
    with t.pg() as conn:
        assert conn.execute("SELECT count(*) FROM cdc_workers").fetchone() == (0,), "it never joined the group"


def test_a_worker_whose_outbox_lost_a_column_ends_at_start_up_in_one_line(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "2"))
    with t.pg() as conn:
        conn.execute("ALTER TABLE outbox DROP COLUMN environment")
    result = t.cdc("run", "--until-lsn", "current", timeout=60)
    assert result.returncode == 1
    assert "lacks column(s) environment" in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]


def test_a_shard_meeting_a_value_clickhouse_cannot_hold_ends_the_worker_in_one_line(
    pg_dsn: str, clickhouse_url: str,
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "2"))
    t.ch().execute("ALTER TABLE events MODIFY COLUMN metadata_version Int8")  # 1000 no longer fits
    with t.pg() as conn:
        before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO outbox (unique_id, event_type, metadata_version) VALUES ('too-big', 'test', 1000)")
        (k,) = conn.execute("SELECT shard_hash % 2 FROM outbox").fetchone()  # type: ignore[misc]
    result = t.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1", "--retry-max", "0.2", timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("cdc: error: ") and "metadata_version" in lines[-1] and "widen that column" in lines[-1]
    assert any("shard streamer cannot go on" in line for line in lines)
    with t.pg() as conn:
        confirmed = conn.execute("SELECT confirmed_flush_lsn <= %s::pg_lsn FROM pg_replication_slots "
                                 "WHERE slot_name = %s", (before, f"cdc_outbox_{k}")).fetchone()
    assert confirmed == (True,), "the shard acknowledged a batch that was not stored"
    t.ch().execute("ALTER TABLE events MODIFY COLUMN metadata_version Int32")
    checked(t.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1"))
    assert t.delivered_ids() == ["too-big"]


def test_a_row_with_a_null_unique_id_is_dead_lettered_not_lost_between_the_shards(
    pg_dsn: str, clickhouse_url: str,
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "3"))
    with t.pg() as conn:
        conn.execute("ALTER TABLE outbox ALTER COLUMN unique_id DROP NOT NULL")  # an outbox that allows it
        conn.execute("INSERT INTO outbox (unique_id, event_type) VALUES (NULL, 'no-id'), ('has-id', 'ok')")
        assert conn.execute("SELECT shard_hash % 3 FROM outbox WHERE unique_id IS NULL").fetchone() == (0,)
    checked(t.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1"))
    assert t.delivered_ids() == ["has-id"]
    letters = t.ch().execute("SELECT reason, row_json FROM events_dead_letter")
    assert len(letters) == 1 and '"event_type":"no-id"' in letters[0][1], letters


# The scheme as cdc reads it everywhere else: any case, after blanks.
@pytest.mark.parametrize("scheme", ["chdb://", " CHDB://"])
def test_shards_into_a_chdb_sink_stream_in_threads_of_one_process(pg_dsn: str, tmp_path: Path, scheme: str) -> None:
    pytest.importorskip("chdb")
    t = Target(pg_dsn, f"{scheme}{tmp_path / 'chdb'}")
    checked(t.cdc("migrate", "--shards", "3"))
    ids = [f"c-{i}" for i in range(300)]
    with t.pg() as conn:
        insert_events(conn, ids)
    result = checked(t.cdc("run", "--until-lsn", "current", "--flush-interval", "0.1"))
    assert "its shards stream in threads of this one" in result.stderr
    assert sorted(t.delivered_ids()) == sorted(ids)

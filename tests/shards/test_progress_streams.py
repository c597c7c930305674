"""The progress ledger keyed by slot, on a real ClickHouse: one high-water mark and dedup window per stream,
and tables made before sharding read unchanged by one slot, then upgraded in place."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from clickhouse_driver import Client

from cdc.core.events import DeadLetter
from cdc.sink.base import SinkConfigError
from cdc.sink.clickhouse import ClickHouseSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sink"))
from test_clickhouse_sink import BASE, event_row, make_batch

# The schema cdc created before streams existed (sql/clickhouse at a8909e4), verbatim but for the types.
OLD_SCHEMA = (
    """CREATE TABLE events (unique_id String, event_type String, occurred_at DateTime('UTC'), environment String,
    payload String, metadata_version Int32, outbox_id Int64, commit_lsn UInt64, commit_seq UInt32,
    committed_at DateTime('UTC'), inserted_at DateTime('UTC'))
    ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(occurred_at) ORDER BY (event_type, occurred_at, unique_id)""",
    """CREATE TABLE events_dead_letter (commit_lsn UInt64, commit_seq UInt32, committed_at DateTime('UTC'),
    relation String, reason String, row_json String, inserted_at DateTime('UTC'))
    ENGINE = ReplacingMergeTree() ORDER BY (commit_lsn, commit_seq)""",
    """CREATE TABLE events_cdc_progress (unique_id String, commit_lsn UInt64, commit_seq UInt32,
    committed_at DateTime('UTC'), inserted_at DateTime('UTC'))
    ENGINE = MergeTree() PARTITION BY toStartOfHour(inserted_at) ORDER BY (commit_lsn, commit_seq)""",
    """CREATE MATERIALIZED VIEW events_cdc_progress_mv TO events_cdc_progress
    AS SELECT unique_id, commit_lsn, commit_seq, committed_at, inserted_at FROM events""",
)


def letter(lsn: int, seq: int, reason: str) -> DeadLetter:
    return DeadLetter(lsn, seq, BASE, "public.outbox", reason, "{}")


def test_each_stream_has_its_own_high_water_mark_and_recent_ids(clickhouse_url: str) -> None:
    with ClickHouseSink(clickhouse_url, stream=101, siblings=(102,)) as one, \
            ClickHouseSink(clickhouse_url, stream=102, siblings=(101,)) as two:
        one.ensure_schema()
        two.ensure_schema()
        one.write(make_batch(1, [event_row(500, 0), event_row(500, 1)]))
        two.write(make_batch(1, [event_row(400, 0, unique_id="two-a"), event_row(700, 3, unique_id="two-b")]))
        one.mark_position(450, 9)
        assert one.high_water_mark() == (500, 1)
        assert two.high_water_mark() == (700, 3)
        assert one.recent_unique_ids(10, 3600) == ["id-500-0", "id-500-1"]
        assert two.recent_unique_ids(10, 3600) == ["two-a", "two-b"]
        # A shard of the next generation: its own marks only, but the ids of every older stream.
        with ClickHouseSink(clickhouse_url, stream=200, siblings=(201, 202)) as later:
            assert later.high_water_mark() is None
            assert later.recent_unique_ids(10, 3600) == ["two-a", "id-500-0", "id-500-1", "two-b"]
            # Streamed (the pipeline's rebuild), from the ledger or from the events: the same streams.
            for held in (False, True):
                blocks = later.recent_unique_id_blocks(10, 3600, held=held)
                assert [uid for block in blocks for uid in block] == [b"two-a", b"id-500-0", b"id-500-1", b"two-b"]


def test_two_shards_dead_letters_at_one_position_of_a_transaction_are_both_kept(clickhouse_url: str) -> None:
    with ClickHouseSink(clickhouse_url, stream=101) as one, ClickHouseSink(clickhouse_url, stream=102) as two:
        one.ensure_schema()
        one.write(make_batch(1, [], [letter(900, 0, "from shard one")]))
        two.write(make_batch(1, [], [letter(900, 0, "from shard two")]))
    client = Client.from_url(clickhouse_url)
    client.execute("OPTIMIZE TABLE events_dead_letter FINAL")
    assert sorted(client.execute("SELECT reason, stream FROM events_dead_letter")) == [
        ("from shard one", 101), ("from shard two", 102)]


def test_tables_made_before_sharding_serve_one_slot_unchanged_then_are_upgraded_in_place(clickhouse_url: str) -> None:
    client = Client.from_url(clickhouse_url)
    for statement in OLD_SCHEMA:
        client.execute(statement)
    with ClickHouseSink(clickhouse_url) as old:
        old.ensure_schema()
        old.write(make_batch(1, [event_row(300, 0), event_row(300, 1)], [letter(300, 5, "bad")]))
        assert old.high_water_mark() == (300, 1)
        assert old.recent_unique_ids(10, 3600) == ["id-300-0", "id-300-1"]
    with ClickHouseSink(clickhouse_url, stream=101) as shard:
        with pytest.raises(SinkConfigError, match=r"predate sharding .* `cdc migrate --shards N`"):
            shard.high_water_mark()
        with pytest.raises(SinkConfigError, match="predate sharding"):
            shard.write(make_batch(1, [event_row(310, 0)]))
        ran = shard.ensure_streams()
        assert len(ran) == 5 and shard.ensure_streams() == []
        assert shard.high_water_mark() is None
        shard.write(make_batch(1, [event_row(310, 0, unique_id="s1")], [letter(300, 5, "bad in shard 1")]))
        assert shard.high_water_mark() == (310, 0)
    with ClickHouseSink(clickhouse_url) as unsharded:
        assert unsharded.high_water_mark() == (300, 1)
        assert unsharded.recent_unique_ids(10, 3600) == ["id-300-0", "id-300-1"]
    client.execute("OPTIMIZE TABLE events_dead_letter FINAL")
    assert sorted(client.execute("SELECT reason, stream FROM events_dead_letter")) == [
        ("bad", 0), ("bad in shard 1", 101)]
    assert sorted(client.execute("SELECT unique_id, stream FROM events_cdc_progress")) == [
        ("id-300-0", 0), ("id-300-1", 0), ("s1", 101)]

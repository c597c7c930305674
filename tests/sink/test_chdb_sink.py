"""The chDB sink (chdb:///dir): the ClickHouse sink's tables and guarantees on ClickHouse inside the process.

Reads go through chDB and Arrow directly (support.ChdbReader), not through cdc.
The end-to-end, crash and dedup tests run against this sink too (the sink_url fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import ChdbReader

from cdc.core.events import EVENT_COLUMNS, Batch, DeadLetter
from cdc.settings import Settings
from cdc.sink import open_sink, open_sink_admin
from cdc.sink.base import SinkConfigError
from cdc.sink.chdb import ChdbSink
from cdc.sink.chdb.url import parse_chdb_url

pytest.importorskip("chdb")

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2024, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
MICRO = timedelta(microseconds=1)


def micros(value: datetime) -> int:
    return (value - EPOCH) // MICRO


def event_row(lsn: int, seq: int, **overrides: Any) -> list[Any]:
    values: dict[str, Any] = {
        "unique_id": f"id-{lsn}-{seq}", "event_type": "order.created", "occurred_at": micros(BASE) + seq,
        "environment": "prod", "payload": '{"n": %d}' % seq, "metadata_version": 1, "outbox_id": (lsn * 1000 + seq) % 2**63,
        "commit_lsn": lsn, "commit_seq": seq, "committed_at": micros(BASE + timedelta(minutes=1)),
    }
    values.update(overrides)
    return [values[name] for name in EVENT_COLUMNS]


def make_batch(seq: int, rows: list[list[Any]], dead_letters: list[DeadLetter] | None = None) -> Batch:
    batch = Batch(seq=seq, dead_letters=list(dead_letters or []))
    for row in rows:
        for column, value in zip(batch.columns, row):
            column.append(value)
    return batch


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'sink'}"


@pytest.fixture
def sink(url: str) -> Iterator[ChdbSink]:
    with ChdbSink(url) as made:
        made.ensure_schema()
        yield made


# -- the URL -----------------------------------------------------------------------------------


def test_urls_name_a_directory_and_optionally_a_database(tmp_path: Path) -> None:
    assert parse_chdb_url(f"chdb://{tmp_path}/d").path == tmp_path / "d"
    assert parse_chdb_url(f"chdb://{tmp_path}/d").database == "default"
    assert parse_chdb_url(f"chdb://{tmp_path}/d?database=analytics").database == "analytics"
    assert parse_chdb_url("chdb:rel/dir").path == Path.cwd() / "rel" / "dir"
    for bad, says in (("chdb://db.example.com/x", "names a host"), ("chdb://", "names no directory"),
                      (f"chdb://{tmp_path}?user=x", "'user' is not understood")):
        with pytest.raises(SinkConfigError, match=says):
            parse_chdb_url(bad)


# -- schema and writes -------------------------------------------------------------------------


def test_tables_have_the_current_clickhouse_types(sink: ChdbSink, url: str) -> None:
    sink.ensure_schema()  # idempotent
    types = {(table, name): kind for table, name, kind in ChdbReader(url).execute(
        "SELECT table, name, type FROM system.columns WHERE database = 'default'")}
    assert types[("events", "occurred_at")] == "DateTime64(6, 'UTC')"
    assert types[("events", "event_type")] == "LowCardinality(String)"
    assert types[("events_dead_letter", "committed_at")] == "DateTime64(6, 'UTC')"


def test_written_rows_read_back_to_the_microsecond(sink: ChdbSink, url: str) -> None:
    low, high = sink.timestamp_bounds()
    rows = [
        event_row(5_000_000_000, 0, unique_id="ü-ñ-😀", event_type="заказ.создан", payload='{"t": "héllo 世界"}',
                  metadata_version=-7, outbox_id=2**63 - 1, occurred_at=micros(low), committed_at=micros(high)),
        event_row(2**64 - 1, 2**32 - 1, metadata_version=2**31 - 1, occurred_at=micros(BASE) + 1),
    ]
    sink.write(make_batch(1, rows))
    stored = ChdbReader(url).execute(
        f"SELECT {', '.join(EVENT_COLUMNS)}, toUnixTimestamp64Micro(occurred_at), toUnixTimestamp64Micro(committed_at) "
        "FROM events ORDER BY commit_lsn")
    assert [list(row[:2]) + list(row[3:9]) + list(row[10:]) for row in stored] == [
        [*row[:2], *row[3:9], row[2], row[9]] for row in rows
    ]


def test_high_water_mark_recent_ids_and_marks(sink: ChdbSink) -> None:
    assert sink.high_water_mark() is None
    sink.write(make_batch(1, [event_row(100, 0), event_row(100, 1)]))
    sink.write(make_batch(2, [event_row(300, 0)], [DeadLetter(400, 0, BASE, "public.outbox", "bad", "{}")]))
    assert sink.high_water_mark() == (300, 0)  # the dead letter does not move it
    assert sink.recent_unique_ids(2, 3600) == ["id-100-1", "id-300-0"]
    sink.mark_position(500, 3)
    assert sink.high_water_mark() == (500, 3)
    latest = sink.latest()
    assert latest is not None and latest.commit_lsn == 500


def test_redelivered_batch_collapses_under_final_and_the_ledger_keeps_both(sink: ChdbSink, url: str) -> None:
    batch = make_batch(1, [event_row(9, seq) for seq in range(5)])
    before = [list(column) for column in batch.columns]
    sink.write(batch)
    sink.write(batch)
    assert [list(column) for column in batch.columns] == before
    assert sink.count_events(final=True) == 5
    assert len(ChdbReader(url).execute("SELECT unique_id FROM events_cdc_progress")) == 10


def test_value_too_big_for_its_column_is_refused_and_the_sink_still_works(sink: ChdbSink) -> None:
    with pytest.raises(ValueError, match="cannot store a value"):
        sink.write(make_batch(1, [event_row(1, 2**32)]))
    sink.write(make_batch(2, [event_row(1, 1)]))
    assert sink.high_water_mark() == (1, 1)
    assert sink.count_events() == 1


def test_one_batch_is_one_part_of_the_progress_table(sink: ChdbSink, url: str) -> None:
    sink.write(make_batch(1, [event_row(7, seq) for seq in range(120_000)]))
    parts = ChdbReader(url).execute(
        "SELECT rows FROM system.parts WHERE database = 'default' AND table = 'events_cdc_progress' AND active")
    assert parts == [(120_000,)]


def test_prune_drops_old_hours_and_keeps_the_newest(sink: ChdbSink, url: str) -> None:
    hours = int(time.time()) // 3600 * 3600
    ChdbReader(url).execute(
        "INSERT INTO events_cdc_progress (unique_id, commit_lsn, commit_seq, committed_at, inserted_at) VALUES "
        f"('h5', 1, 0, now64(6), {hours - 5 * 3600}), ('h3', 2, 0, now64(6), {hours - 3 * 3600})")
    sink.write(make_batch(1, [event_row(10, 0)]))
    assert sink.prune_progress(keep_seconds=3600) == 2
    assert ChdbReader(url).execute("SELECT unique_id FROM events_cdc_progress") == [("id-10-0",)]
    assert sink.high_water_mark() == (10, 0)


def test_recent_ids_stream_in_blocks_for_the_sinks_own_stream_and_from_the_events_when_held(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cdc.sink.clickhouse.recent.ID_BLOCK", 2)
    with ChdbSink(url, stream=101, siblings=(102,)) as one:
        one.ensure_schema()
        one.write(make_batch(1, [event_row(100, seq) for seq in range(3)]))
        one.write(make_batch(2, [event_row(100, 2)]))  # delivered again after a crash: stored twice
        blocks = list(one.recent_unique_id_blocks(10, 3600))
        assert [len(block) for block in blocks] == [2, 2]
        assert [uid for block in blocks for uid in block] == [b"id-100-0", b"id-100-1", b"id-100-2", b"id-100-2"]
    with ChdbSink(url, stream=102, siblings=(101,)) as two:
        two.ensure_schema()
        two.write(make_batch(1, [event_row(50, 0, unique_id="two-a")]))
        assert list(two.recent_unique_id_blocks(10, 3600)) == [[b"two-a"]]  # not its sibling's ids
        two.connection.query(f"TRUNCATE TABLE {two.names.events}")  # the ledger still claims what it held
        two.write(make_batch(2, [event_row(60, 0, unique_id="two-b")]))
        assert list(two.recent_unique_id_blocks(10, 3600, held=True)) == [[b"two-b"]]
        assert two.recent_unique_ids(10, 3600) == ["two-a", "two-b"]


# -- admin, restarts, other processes ----------------------------------------------------------


def test_admin_answers_from_the_same_directory(sink: ChdbSink, url: str) -> None:
    sink.write(make_batch(1, [event_row(42, 0, unique_id="u-1")], [DeadLetter(42, 1, BASE, "public.outbox", "bad",
                                                                                  '{"id":"17"}')]))
    with open_sink_admin(url, Settings()) as admin:
        assert admin.schema_problems() == []
        assert admin.counts() == (1, 1)
        assert admin.high_water_mark() == (42, 0)
        assert admin.has_event("u-1") and not admin.has_event("u-2")
        assert admin.has_dead_letter("public.outbox", 17)
        assert admin.version_warning() is None
        last = admin.last_inserted_at()
        assert last is not None and abs((datetime.now(UTC) - last).total_seconds()) < 600


def test_what_is_stored_survives_closing_and_opening_again(url: str) -> None:
    with open_sink(url, Settings()) as first:  # type: ignore[attr-defined]
        first.ensure_schema()
        first.write(make_batch(1, [event_row(11, 0), event_row(11, 1)]))
    with open_sink(url, Settings()) as second:  # type: ignore[attr-defined]
        second.ensure_schema()
        assert second.high_water_mark() == (11, 1)
        assert second.recent_unique_ids(10, 3600) == ["id-11-0", "id-11-1"]


_WRITER = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [sys.argv[2]]
    from cdc.logs import quiet_logger
    from test_chdb_sink import ChdbSink, event_row, make_batch
    sink = ChdbSink(sys.argv[1], log=quiet_logger())
    sink.ensure_schema()
    print("open", flush=True)
    mark = sink.high_water_mark()
    lsn = 1 if mark is None else mark[0] + 1
    while True:
        sink.write(make_batch(lsn, [event_row(lsn, seq, payload="x" * 200) for seq in range(20_000)]))
        print("wrote", lsn, flush=True)
        lsn += 1
""")


def _start_writer(url: str) -> subprocess.Popen[str]:
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(here).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, url, here], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    return proc


def test_a_directory_in_use_by_another_process_is_refused_naming_it(url: str) -> None:
    writer = _start_writer(url)
    try:
        with pytest.raises(SinkConfigError, match=f"in use by process {writer.pid} .*one process at a time"):
            ChdbSink(url)
    finally:
        writer.kill()
        writer.wait()


def test_kill_9_while_inserting_leaves_a_consistent_directory(url: str) -> None:
    written = 0
    for kill_after in (0.3, 0.7):  # into the second or third batch's INSERT, most likely
        writer = _start_writer(url)
        assert writer.stdout is not None and writer.stdout.readline().startswith("wrote")
        time.sleep(kill_after)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        with ChdbSink(url) as sink:  # opens after the crash: no lock left behind, no damaged part
            sink.ensure_schema()
            mark = sink.high_water_mark()
            reader = ChdbReader(url)
            progress = {uid for (uid,) in reader.execute("SELECT unique_id FROM events_cdc_progress")}
            events = {uid for (uid,) in reader.execute("SELECT unique_id FROM events")}
            assert progress <= events, "the high-water mark covers rows that are not stored"
            assert mark is None or f"id-{mark[0]}-{mark[1]}" in events
            # Each batch (one commit_lsn) is there whole or not at all, in both tables. The progress rows
            # are a second part, written after the events': a kill between the two leaves the batch in
            # events but not in the ledger, so the next writer (from the high-water mark) sends it again
            # and events holds it twice, whole, until the ReplacingMergeTree merges the copies. The ledger,
            # which counts every insert, still holds it once.
            torn = reader.execute("SELECT commit_lsn, count(), uniqExact(unique_id) FROM events GROUP BY commit_lsn "
                                  "HAVING count() % 20000 != 0 OR uniqExact(unique_id) != 20000")
            assert torn == [], "events holds part of a batch"
            partial = reader.execute("SELECT commit_lsn, count() FROM events_cdc_progress GROUP BY commit_lsn "
                                     "HAVING count() != 20000")
            assert partial == [], "events_cdc_progress holds part of a batch, or a batch twice"
            assert reader.execute("CHECK TABLE events SETTINGS check_query_single_value_result = 1") == [(1,)]
            written = len(events)
        assert mark is not None and written >= 20_000

"""The ClickHouse sink against a real server (the clickhouse_url fixture: a fresh database each test)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_driver import Client

from cdc.core.dedup import DedupWindow
from cdc.core.events import EVENT_COLUMNS, Batch, DeadLetter
from cdc.sink.base import SinkConfigError, SinkError
from cdc.sink.clickhouse import ClickHouseSink
from cdc.sink.clickhouse.connection import compression_available
from cdc.sink.clickhouse.url import PASSWORD_ENV

from servers import ClickHouse

UTC = timezone.utc
SECRET = "Sup3r-S3cret-pw"
BASE = datetime(2024, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@pytest.fixture
def sink(clickhouse_url: str) -> Iterator[ClickHouseSink]:
    with ClickHouseSink(clickhouse_url) as made:
        made.ensure_schema()
        yield made


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def client_for(url: str) -> Client:
    return Client.from_url(url)


def select(url: str, query: str) -> list[Any]:
    client = client_for(url)
    try:
        return list(client.execute(query))
    finally:
        client.disconnect()


def micros(value: datetime) -> int:
    """A Batch timestamp: microseconds since the Unix epoch."""
    return (value - EPOCH) // MICROSECOND


def instant(value: int) -> datetime:
    return EPOCH + value * MICROSECOND


def event_row(lsn: int, seq: int, **overrides: Any) -> list[Any]:
    values: dict[str, Any] = {
        "unique_id": f"id-{lsn}-{seq}",
        "event_type": "order.created",
        "occurred_at": micros(BASE + timedelta(seconds=seq % 86400)),
        "environment": "prod",
        "payload": '{"n": %d}' % seq,
        "metadata_version": 1,
        "outbox_id": (lsn * 1000 + seq) % 2**63,
        "commit_lsn": lsn,
        "commit_seq": seq,
        "committed_at": micros(BASE + timedelta(minutes=1)),
    }
    values.update(overrides)
    return [values[name] for name in EVENT_COLUMNS]


def make_batch(seq: int, rows: list[list[Any]], dead_letters: list[DeadLetter] | None = None) -> Batch:
    batch = Batch(seq=seq, dead_letters=list(dead_letters or []))
    for row in rows:
        for column, value in zip(batch.columns, row):
            column.append(value)
    return batch


def expected_time(sink: ClickHouseSink, value: datetime) -> datetime:
    """What the events table gives back: microseconds on DateTime64, whole seconds on DateTime."""
    if sink.capabilities.modern:
        return value.astimezone(UTC)
    return value.astimezone(UTC).replace(microsecond=0)


# -- connecting --------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_is_a_config_error_naming_host_port_without_password() -> None:
    port = closed_port()
    url = f"clickhouse://default:{SECRET}@127.0.0.1:{port}/x?connect_timeout=2"
    with pytest.raises(SinkConfigError) as caught:
        ClickHouseSink(url)
    message = str(caught.value)
    assert f"127.0.0.1:{port} is unreachable" in message
    assert "CDC_CLICKHOUSE_URL" in message
    assert SECRET not in message
    assert SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None


def test_unknown_host_is_a_config_error_without_password() -> None:
    url = f"clickhouse://default:{SECRET}@no-such-host.invalid:9000/x?connect_timeout=2"
    with pytest.raises(SinkConfigError) as caught:
        ClickHouseSink(url)
    assert "no-such-host.invalid:9000" in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_wrong_password_is_refused_without_showing_it(clickhouse_url: str) -> None:
    parts = urlsplit(clickhouse_url)
    user = parts.username or "default"
    wrong = urlunsplit(parts._replace(netloc=f"{user}:{SECRET}@{parts.hostname}:{parts.port}"))
    for url, password in ((wrong, None), (clickhouse_url, SECRET)):
        with pytest.raises(SinkConfigError) as caught:
            ClickHouseSink(url, password=password)
        message = str(caught.value)
        assert f"refused user '{user}'" in message
        assert PASSWORD_ENV in message
        assert "Stack trace" not in message and "\n" not in message
        assert SECRET not in message and SECRET not in repr(caught.value)


def test_sink_repr_hides_the_password(clickhouse_server: ClickHouse, clickhouse_url: str) -> None:
    database = database_of(clickhouse_url)
    user = "cdc_writer"
    clickhouse_server.add_user(user, SECRET, databases=[database])
    try:
        url = clickhouse_server.url(database, user=user, password=SECRET)
        with ClickHouseSink(url) as sink:
            assert SECRET not in repr(sink)
            assert SECRET not in sink.url
            sink.ensure_schema()
            assert sink.high_water_mark() is None
        # The same user with the password from the environment instead.
        bare = clickhouse_server.url(database, user=user)
        with ClickHouseSink(bare, environ={PASSWORD_ENV: SECRET}) as sink:
            assert sink.count_events() == 0
    finally:
        clickhouse_server.remove_user(user)


# -- schema ------------------------------------------------------------------


def test_ensure_schema_creates_tables_and_view_and_is_idempotent(clickhouse_url: str) -> None:
    database = database_of(clickhouse_url)
    with ClickHouseSink(clickhouse_url, "orders") as sink:
        sink.ensure_schema()
        sink.ensure_schema()
    tables = dict(select(clickhouse_url, f"SELECT name, engine FROM system.tables WHERE database = '{database}'"))
    assert tables == {
        "orders": "ReplacingMergeTree",
        "orders_dead_letter": "ReplacingMergeTree",
        "orders_cdc_progress": "MergeTree",
        "orders_cdc_progress_mv": "MaterializedView",
    }
    columns = select(clickhouse_url, f"SELECT name FROM system.columns WHERE database = '{database}' AND table = 'orders'")
    assert [name for (name,) in columns] == [*EVENT_COLUMNS, "inserted_at", "stream"]


def test_old_server_gets_second_precision_types_and_says_so(sink: ClickHouseSink, clickhouse_url: str) -> None:
    database = database_of(clickhouse_url)
    types = dict(
        select(clickhouse_url, f"SELECT name, type FROM system.columns WHERE database = '{database}' AND table = 'events'")
    )
    if sink.capabilities.modern:
        assert types["occurred_at"] == "DateTime64(6, 'UTC')"
        assert types["event_type"] == "LowCardinality(String)"
    else:
        assert types["occurred_at"] == "DateTime('UTC')"
        assert types["event_type"] == "String"
        assert sink.timestamp_bounds() == (
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(2105, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        )


def test_ensure_schema_creates_a_missing_database(clickhouse_server: ClickHouse, clickhouse_url: str) -> None:
    database = f"{database_of(clickhouse_url)}_new"
    url = clickhouse_server.url(database)
    try:
        with ClickHouseSink(url) as sink:
            # Bounds are known before the tables exist: they follow the server.
            assert sink.timestamp_bounds()[0].year in (1900, 1970)
            sink.ensure_schema()
            sink.write(make_batch(1, [event_row(10, 0)]))
            assert sink.high_water_mark() == (10, 0)
    finally:
        clickhouse_server.execute(f"DROP DATABASE IF EXISTS {database}")


def test_existing_table_without_required_columns_is_refused_with_what_to_do(clickhouse_url: str) -> None:
    database = database_of(clickhouse_url)
    client = client_for(clickhouse_url)
    client.execute(
        f"CREATE TABLE {database}.events (unique_id String, occurred_at DateTime) "
        "ENGINE = ReplacingMergeTree() ORDER BY unique_id"
    )
    client.disconnect()
    with ClickHouseSink(clickhouse_url) as sink, pytest.raises(SinkConfigError) as caught:
        sink.ensure_schema()
    message = str(caught.value)
    assert "lacks columns event_type, environment" in message
    assert "ALTER TABLE" in message and "\n" not in message


def test_existing_table_of_another_engine_is_refused(clickhouse_url: str) -> None:
    database = database_of(clickhouse_url)
    client = client_for(clickhouse_url)
    client.execute(f"CREATE TABLE {database}.events (unique_id String) ENGINE = Memory")
    client.disconnect()
    with ClickHouseSink(clickhouse_url) as sink, pytest.raises(SinkConfigError, match="engine Memory"):
        sink.ensure_schema()


def test_write_before_the_tables_exist_asks_for_cdc_migrate(clickhouse_url: str) -> None:
    with ClickHouseSink(clickhouse_url) as sink, pytest.raises(SinkConfigError, match="run `cdc migrate`"):
        sink.write(make_batch(1, [event_row(1, 0)]))


def test_table_names_that_are_not_identifiers_are_refused(clickhouse_url: str) -> None:
    with pytest.raises(SinkConfigError, match="not a plain identifier"):
        ClickHouseSink(clickhouse_url, "events; DROP TABLE x")


# -- writing and reading back -------------------------------------------------


def test_written_rows_read_back_exactly(sink: ClickHouseSink, clickhouse_url: str) -> None:
    database = database_of(clickhouse_url)
    india = timezone(timedelta(hours=5, minutes=30))
    big_payload = '{"blob": "' + "x" * 3_000_000 + '"}'
    rows = [
        event_row(
            5_000_000_000, 0,
            unique_id="ü-ñ-😀",
            event_type="заказ.создан",
            environment="staging",
            payload='{"text": "héllo 世界 \\u0000"}',
            metadata_version=-7,
            outbox_id=2**63 - 1,
            occurred_at=micros(datetime(2024, 1, 1, 5, 30, 0, 654321, tzinfo=india)),
        ),
        event_row(2**64 - 1, 2**32 - 1, payload=big_payload, metadata_version=2**31 - 1, occurred_at=micros(BASE)),
    ]
    sink.write(make_batch(1, rows))
    stored = select(
        clickhouse_url,
        f"SELECT {', '.join(EVENT_COLUMNS)}, toString(occurred_at) FROM {database}.events ORDER BY commit_lsn",
    )
    assert len(stored) == 2
    for got, sent in zip(stored, rows):
        expected = list(sent)
        expected[2] = expected_time(sink, instant(sent[2]))
        expected[9] = expected_time(sink, instant(sent[9]))
        assert list(got[:10]) == expected
    # The server holds UTC, whatever offset the value came with.
    assert stored[0][10].startswith("2024-01-01 00:00:00")


def test_timestamps_at_the_bounds_round_trip(sink: ClickHouseSink, clickhouse_url: str) -> None:
    low, high = sink.timestamp_bounds()
    sink.write(make_batch(1, [event_row(1, 0, occurred_at=micros(low), committed_at=micros(high))]))
    # Compared as the server's integers: clickhouse-driver reads DateTime64
    # through a float, which can be a microsecond off far from 1970.
    as_int = "toUnixTimestamp64Micro({})" if sink.capabilities.modern else "toUInt32({})"
    (got,) = select(
        clickhouse_url,
        f"SELECT {as_int.format('occurred_at')}, {as_int.format('committed_at')} "
        f"FROM {database_of(clickhouse_url)}.events",
    )
    unit = timedelta(microseconds=1) if sink.capabilities.modern else timedelta(seconds=1)
    assert got == ((low - EPOCH) // unit, (high - EPOCH) // unit)


def test_microseconds_are_stored_as_the_columns_ticks(sink: ClickHouseSink, clickhouse_url: str) -> None:
    # Whole seconds on DateTime (the fraction floored away), every microsecond on DateTime64(6).
    start = micros(BASE)
    sent = [start, start + 999_999, start + 1_000_000, micros(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC))]
    sink.write(make_batch(1, [event_row(1, seq, occurred_at=value) for seq, value in enumerate(sent)]))
    as_int = "toUnixTimestamp64Micro(occurred_at)" if sink.capabilities.modern else "toUInt32(occurred_at)"
    got = select(clickhouse_url, f"SELECT {as_int} FROM {database_of(clickhouse_url)}.events ORDER BY commit_seq")
    per_tick = 1 if sink.capabilities.modern else 1_000_000
    assert [value for (value,) in got] == [value // per_tick for value in sent]


def test_out_of_range_or_non_integer_timestamps_are_refused_before_sending(sink: ClickHouseSink) -> None:
    low, _ = sink.timestamp_bounds()
    with pytest.raises(ValueError, match="occurred_at .* is outside .* must be dead-lettered"):
        sink.write(make_batch(1, [event_row(1, 0, occurred_at=micros(low) - 1)]))
    with pytest.raises(TypeError, match="committed_at must hold integer microseconds since the Unix epoch"):
        sink.write(make_batch(1, [event_row(1, 0, committed_at=datetime(2024, 1, 1, tzinfo=UTC))]))
    with pytest.raises(TypeError, match="committed_at must hold integer microseconds"):
        sink.write(make_batch(1, [event_row(1, 0), event_row(1, 1, committed_at=BASE)]))
    assert sink.count_events() == 0


def test_value_too_big_for_its_column_is_a_value_error_and_the_sink_still_works(sink: ClickHouseSink) -> None:
    with pytest.raises(ValueError, match="commit_seq"):
        sink.write(make_batch(1, [event_row(1, 2**32)]))
    sink.write(make_batch(2, [event_row(1, 1)]))
    assert sink.high_water_mark() == (1, 1)


def test_one_batch_shares_one_inserted_at(sink: ClickHouseSink, clickhouse_url: str) -> None:
    before = int(time.time())
    sink.write(make_batch(1, [event_row(1, seq) for seq in range(100)]))
    stamps = select(clickhouse_url, f"SELECT DISTINCT toUInt32(inserted_at) FROM {database_of(clickhouse_url)}.events")
    assert len(stamps) == 1
    assert before <= stamps[0][0] <= int(time.time())


def test_high_water_mark_and_recent_ids_follow_several_batches(sink: ClickHouseSink) -> None:
    assert sink.high_water_mark() is None
    assert sink.latest() is None
    assert sink.recent_unique_ids(10, 3600) == []
    sink.write(make_batch(1, [event_row(100, 0), event_row(100, 1)]))
    sink.write(make_batch(2, [event_row(250, 0)]))
    sink.write(make_batch(3, [event_row(300, 0), event_row(300, 1), event_row(300, 2)]))
    assert sink.high_water_mark() == (300, 2)
    assert sink.recent_unique_ids(4, 3600) == ["id-250-0", "id-300-0", "id-300-1", "id-300-2"]
    assert sink.recent_unique_ids(100, 3600)[0] == "id-100-0"
    assert sink.recent_unique_ids(0, 3600) == []
    latest = sink.latest()
    assert latest is not None
    assert latest.commit_lsn == 300
    assert latest.committed_at == expected_time(sink, BASE + timedelta(minutes=1))
    assert sink.count_events() == 6


def test_recent_ids_leave_out_rows_older_than_max_age(sink: ClickHouseSink, clickhouse_url: str) -> None:
    sink.write(make_batch(1, [event_row(1, 0)]))
    database = database_of(clickhouse_url)
    client = client_for(clickhouse_url)
    two_hours_ago = int(time.time()) - 7200
    client.execute(
        f"INSERT INTO {database}.events_cdc_progress (unique_id, commit_lsn, commit_seq, committed_at, inserted_at) VALUES",
        [["old"], [0], [0], [BASE], [two_hours_ago]],
        columnar=True,
    )
    client.disconnect()
    assert sink.recent_unique_ids(10, 3600) == ["id-1-0"]
    assert sink.recent_unique_ids(10, 3 * 3600) == ["old", "id-1-0"]


def test_dead_letters_are_stored_with_their_reason(sink: ClickHouseSink, clickhouse_url: str) -> None:
    letter = DeadLetter(
        commit_lsn=77, commit_seq=3, committed_at=BASE, relation="public.outbox",
        reason="occurred_at 9999-01-01 is outside what ClickHouse stores", row_json='{"id": "42", "ü": null}',
    )
    sink.write(make_batch(1, [event_row(77, 0)], [letter]))
    database = database_of(clickhouse_url)
    (got,) = select(
        clickhouse_url,
        f"SELECT commit_lsn, commit_seq, committed_at, relation, reason, row_json FROM {database}.events_dead_letter",
    )
    assert got == (77, 3, expected_time(sink, BASE), letter.relation, letter.reason, letter.row_json)
    assert sink.count_dead_letters() == 1


def test_dead_letters_alone_do_not_move_the_high_water_mark(sink: ClickHouseSink) -> None:
    letter = DeadLetter(5, 0, BASE, "public.outbox", "bad", "{}")
    sink.write(make_batch(1, [], [letter]))
    assert sink.high_water_mark() is None
    assert sink.count_dead_letters() == 1


def test_redelivered_batch_collapses_under_final(sink: ClickHouseSink, clickhouse_url: str) -> None:
    letter = DeadLetter(9, 5, BASE, "public.outbox", "bad", "{}")
    batch = make_batch(1, [event_row(9, seq) for seq in range(5)], [letter])
    sink.write(batch)
    sink.write(batch)
    assert sink.count_events() == 10
    assert sink.count_events(final=True) == 5
    assert sink.count_dead_letters(final=True) == 1
    assert sink.high_water_mark() == (9, 4)
    database = database_of(clickhouse_url)
    select(clickhouse_url, f"OPTIMIZE TABLE {database}.events FINAL")
    assert sink.count_events() == 5


def test_writing_a_batch_again_sends_the_same_values_and_leaves_the_batch_as_it_was(
    sink: ClickHouseSink, clickhouse_url: str
) -> None:
    # What the flusher does on a retry: write the very same Batch object again.
    batch = make_batch(1, [event_row(9, seq, occurred_at=micros(BASE) + seq * 250_000) for seq in range(5)])
    before = [list(column) for column in batch.columns]
    lists = [id(column) for column in batch.columns]
    sink.write(batch)
    sink.write(batch)
    assert [list(column) for column in batch.columns] == before
    assert [id(column) for column in batch.columns] == lists
    # DISTINCT: a background merge may already have collapsed the copies, which
    # keeps the second; either way, one set of values means both sent the same.
    as_int = "toUnixTimestamp64Micro({})" if sink.capabilities.modern else "toUInt32({})"
    stored = select(
        clickhouse_url,
        f"SELECT DISTINCT commit_seq, {as_int.format('occurred_at')}, {as_int.format('committed_at')} "
        f"FROM {database_of(clickhouse_url)}.events ORDER BY commit_seq",
    )
    per_tick = 1 if sink.capabilities.modern else 1_000_000
    assert stored == [(seq, o // per_tick, c // per_tick) for seq, o, c in zip(before[8], before[2], before[9])]


def test_failed_insert_is_a_sink_error_and_the_next_write_reconnects(
    sink: ClickHouseSink, clickhouse_url: str
) -> None:
    database = database_of(clickhouse_url)
    select(clickhouse_url, f"DROP TABLE {database}.events_cdc_progress_mv")
    select(clickhouse_url, f"DROP TABLE {database}.events")
    with pytest.raises(SinkError) as caught:
        sink.write(make_batch(1, [event_row(1, 0)]))
    assert "events" in str(caught.value) and "\n" not in str(caught.value)
    sink.ensure_schema()
    sink.write(make_batch(2, [event_row(1, 0)]))
    assert sink.high_water_mark() == (1, 0)


def test_server_restart_between_writes_is_survived(clickhouse_server: ClickHouse, sink: ClickHouseSink) -> None:
    if not clickhouse_server.can_restart:
        pytest.skip("this ClickHouse is not ours to restart")
    sink.write(make_batch(1, [event_row(1, 0)]))
    clickhouse_server.stop()
    try:
        with pytest.raises(SinkError):
            sink.write(make_batch(2, [event_row(2, 0)]))
    finally:
        clickhouse_server.start()
    sink.write(make_batch(2, [event_row(2, 0)]))
    assert sink.high_water_mark() == (2, 0)


# -- progress pruning ---------------------------------------------------------


def insert_progress_hours_ago(url: str, rows: list[tuple[str, int, float]]) -> None:
    """Progress rows (unique_id, commit_lsn, hours ago) as if older batches had written them."""
    now = int(time.time())
    client = client_for(url)
    client.execute(
        f"INSERT INTO {database_of(url)}.events_cdc_progress "
        "(unique_id, commit_lsn, commit_seq, committed_at, inserted_at) VALUES",
        [
            [uid for uid, _, _ in rows],
            [lsn for _, lsn, _ in rows],
            [0 for _ in rows],
            [BASE for _ in rows],
            [now - int(hours * 3600) for _, _, hours in rows],
        ],
        columnar=True,
    )
    client.disconnect()


def progress_ids(url: str) -> set[str]:
    return {uid for (uid,) in select(url, f"SELECT unique_id FROM {database_of(url)}.events_cdc_progress")}


def test_prune_drops_old_hours_and_keeps_the_newest(sink: ClickHouseSink, clickhouse_url: str) -> None:
    insert_progress_hours_ago(clickhouse_url, [("h5", 1, 5), ("h3", 2, 3)])
    sink.write(make_batch(1, [event_row(10, 0)]))
    assert sink.prune_progress(keep_seconds=3600) == 2
    assert progress_ids(clickhouse_url) == {"id-10-0"}
    assert sink.high_water_mark() == (10, 0)
    assert sink.prune_progress(keep_seconds=0) == 0


def test_prune_never_drops_the_newest_hour_even_when_all_are_old(sink: ClickHouseSink, clickhouse_url: str) -> None:
    insert_progress_hours_ago(clickhouse_url, [("h5", 1, 5), ("h3", 2, 3)])
    assert sink.prune_progress(keep_seconds=0) == 1
    assert progress_ids(clickhouse_url) == {"h3"}
    assert sink.high_water_mark() == (2, 0)


def test_prune_keeps_the_hour_holding_the_high_water_mark(sink: ClickHouseSink, clickhouse_url: str) -> None:
    # The clock went back: the highest LSN was stamped in an older hour.
    insert_progress_hours_ago(clickhouse_url, [("h6", 1, 6), ("h4", 99, 4), ("h2", 50, 2)])
    assert sink.prune_progress(keep_seconds=0) == 1
    assert progress_ids(clickhouse_url) == {"h4", "h2"}
    assert sink.high_water_mark() == (99, 0)


# -- compression ---------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_writes_work_compressed_and_not(clickhouse_url: str, compression: str) -> None:
    if compression != "none" and not compression_available(compression):
        pytest.skip(f"clickhouse-driver[{compression}] is not installed")
    parts = urlsplit(clickhouse_url)
    query = "&".join(filter(None, [parts.query, f"compression={compression}"]))
    with ClickHouseSink(urlunsplit(parts._replace(query=query))) as sink:
        assert sink._conn.compression == compression
        sink.ensure_schema()
        sink.write(make_batch(1, [event_row(3, seq, payload="y" * 10_000) for seq in range(50)]))
        assert sink.count_events() == 50
        assert sink.high_water_mark() == (3, 49)


def test_auto_compression_sends_uncompressed_to_a_server_on_this_machine(clickhouse_url: str) -> None:
    if urlsplit(clickhouse_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the test server is not on this machine")
    with ClickHouseSink(clickhouse_url) as sink:
        assert sink._conn.compression == "none"


def test_recent_id_blocks_stream_the_newest_oldest_first_with_a_repeat_as_stored(
    sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cdc.sink.clickhouse.recent.ID_BLOCK", 2)
    sink.write(make_batch(1, [event_row(100, 0), event_row(100, 1)]))
    sink.write(make_batch(2, [event_row(250, 0), event_row(250, 1), event_row(250, 2)]))
    sink.write(make_batch(3, [event_row(250, 2)]))  # delivered again after a crash: stored twice
    blocks = list(sink.recent_unique_id_blocks(5, 3600))
    assert all(len(block) <= 2 for block in blocks) and len(blocks) >= 3
    assert [uid for block in blocks for uid in block] == [
        b"id-100-1", b"id-250-0", b"id-250-1", b"id-250-2", b"id-250-2"]
    assert sink.recent_unique_ids(5, 3600) == ["id-100-1", "id-250-0", "id-250-1", "id-250-2"]


def test_recent_id_blocks_give_each_id_as_its_utf8_bytes_which_the_window_takes_as_the_same_id(
    sink: ClickHouseSink,
) -> None:
    sink.write(make_batch(1, [event_row(100, 0, unique_id="zoë-🎉-1"), event_row(100, 1, unique_id="plain-2")]))
    blocks = list(sink.recent_unique_id_blocks(10, 3600))
    assert [uid for block in blocks for uid in block] == ["zoë-🎉-1".encode(), b"plain-2"]
    assert sink.recent_unique_ids(10, 3600) == ["zoë-🎉-1", "plain-2"]
    window = DedupWindow(capacity=10)
    assert window.remember((uid for block in blocks for uid in block), 1.0) == 2
    # The stream hands the window the text PostgreSQL sent, or its bytes: either is the stored id.
    assert window.admit_many(["zoë-🎉-1", b"plain-2", "new-3"], 2.0) == [False, False, True]


def test_recent_id_blocks_left_unfinished_leave_the_sink_usable(
    sink: ClickHouseSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cdc.sink.clickhouse.recent.ID_BLOCK", 1)
    sink.write(make_batch(1, [event_row(100, seq) for seq in range(5)]))
    blocks = sink.recent_unique_id_blocks(5, 3600)
    try:
        first = next(blocks)
    finally:
        blocks.close()  # the rest of the result was still on the socket
    assert list(first) == [b"id-100-0"]
    assert sink.high_water_mark() == (100, 4)
    assert sink.connection.query("SELECT 'text'") == [("text",)]  # bytes were for that one query only
    assert sink.recent_unique_ids(2, 3600) == ["id-100-3", "id-100-4"]


def test_held_ids_stream_from_the_events_themselves_not_the_ledger(
    sink: ClickHouseSink, clickhouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cdc.sink.clickhouse.recent.ID_BLOCK", 2)
    sink.write(make_batch(1, [event_row(100, seq) for seq in range(3)]))
    client_for(clickhouse_url).execute("TRUNCATE TABLE events")  # a mistake: the ledger still claims them
    sink.write(make_batch(2, [event_row(200, seq) for seq in range(3)]))
    held = list(sink.recent_unique_id_blocks(10, 3600, held=True))
    assert all(len(block) <= 2 for block in held) and len(held) >= 2
    assert [uid for block in held for uid in block] == [b"id-200-0", b"id-200-1", b"id-200-2"]
    assert sink.recent_unique_ids(10, 3600, held=True) == ["id-200-0", "id-200-1", "id-200-2"]
    assert sink.recent_unique_ids(4, 3600) == ["id-100-2", "id-200-0", "id-200-1", "id-200-2"]

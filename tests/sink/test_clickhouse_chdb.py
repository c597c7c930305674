"""The current-release DDL (DateTime64, LowCardinality) runs on a modern ClickHouse: chDB, in process.

The Debian server the other tests use is 18.16 and only ever sees the old
variant; this proves the other one is valid where it is meant to run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cdc.sink.clickhouse.ddl import Capabilities, SchemaNames, parse_version, render_schema
from cdc.sink.clickhouse.layout import SchemaInspector
from cdc.sink.clickhouse.timestamps import TimestampType

chdb_session = pytest.importorskip("chdb.session")

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DATABASE = "cdc_chdb"


class ChSession:
    """A chDB session that answers rows, like the driver does."""

    def __init__(self, path: Path) -> None:
        self._session = chdb_session.Session(str(path))

    def rows(self, sql: str) -> list[list[Any]]:
        result = self._session.query(sql, "JSONCompact")
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return list(json.loads(text)["data"]) if text.strip() else []

    def run(self, sql: str) -> None:
        self._session.query(sql)

    def close(self) -> None:
        self._session.close()


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChSession]:
    session = ChSession(tmp_path_factory.mktemp("chdb"))
    yield session
    session.close()


@pytest.fixture(scope="module")
def modern(chdb: ChSession) -> Capabilities:
    version = parse_version(str(chdb.rows("SELECT version()")[0][0]))
    assert version >= (20, 1)
    names = SchemaNames(DATABASE, "events")
    capabilities = Capabilities(version)
    for _, statement in render_schema(names, capabilities):
        chdb.run(statement)
        chdb.run(statement)  # idempotent, like ensure_schema
    return capabilities


def ticks_sql(column: TimestampType, value: datetime) -> str:
    # The same integer ticks the sink hands to clickhouse-driver for a Batch's microseconds.
    (ticks,) = column.from_micros([(value - EPOCH) // timedelta(microseconds=1)], "x")
    return f"fromUnixTimestamp64Micro(toInt64({ticks}), 'UTC')"


def test_modern_ddl_makes_the_tables_and_view_with_modern_types(chdb: ChSession, modern: Capabilities) -> None:
    engines = dict(map(tuple, chdb.rows(f"SELECT name, engine FROM system.tables WHERE database = '{DATABASE}'")))
    assert engines == {
        "events": "ReplacingMergeTree",
        "events_dead_letter": "ReplacingMergeTree",
        "events_cdc_progress": "MergeTree",
        "events_cdc_progress_mv": "MaterializedView",
    }
    types = {
        (table, name): kind
        for table, name, kind in chdb.rows(
            f"SELECT table, name, type FROM system.columns WHERE database = '{DATABASE}'"
        )
    }
    assert types[("events", "occurred_at")] == "DateTime64(6, 'UTC')"
    assert types[("events", "event_type")] == "LowCardinality(String)"
    assert types[("events", "environment")] == "LowCardinality(String)"
    assert types[("events_cdc_progress", "committed_at")] == "DateTime64(6, 'UTC')"


def test_inspector_reads_the_modern_tables_as_microsecond_columns(chdb: ChSession, modern: Capabilities) -> None:
    inspector = SchemaInspector(SchemaNames(DATABASE, "events"), modern)
    columns: dict[str, dict[str, str]] = {}
    for table, name, kind in chdb.rows(f"SELECT table, name, type FROM system.columns WHERE database = '{DATABASE}'"):
        columns.setdefault(table, {})[name] = kind
    layout = inspector.layout(columns)
    assert layout.occurred_at.precision == 6
    assert layout.bounds == (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))


def test_row_inserted_into_events_reaches_progress_through_the_view(chdb: ChSession, modern: Capabilities) -> None:
    column = TimestampType(modern.timestamp_sql, modern.version)
    low, high = column.bounds
    committed = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    chdb.run(
        f"INSERT INTO {DATABASE}.events (unique_id, event_type, occurred_at, environment, payload, "
        "metadata_version, outbox_id, commit_lsn, commit_seq, committed_at, inserted_at) VALUES "
        f"('u-1', 'order.created', {ticks_sql(column, low)}, 'prod', '{{\"a\": \"é\"}}', 1, 42, "
        f"18446744073709551615, 4294967295, {ticks_sql(column, committed)}, toDateTime(1700000000)), "
        f"('u-2', 'order.created', {ticks_sql(column, high)}, 'prod', '{{}}', 1, 43, 5, 0, "
        f"{ticks_sql(column, committed)}, toDateTime(1700000000))"
    )
    events = chdb.rows(f"SELECT unique_id, toString(occurred_at), payload FROM {DATABASE}.events ORDER BY unique_id")
    assert events == [
        ["u-1", "1900-01-01 00:00:00.000000", '{"a": "é"}'],
        ["u-2", "2299-12-31 23:59:59.999999", "{}"],
    ]
    progress = chdb.rows(
        f"SELECT unique_id, toString(commit_lsn), commit_seq, toString(committed_at), toString(inserted_at) "
        f"FROM {DATABASE}.events_cdc_progress ORDER BY commit_lsn DESC, commit_seq DESC LIMIT 1"
    )
    assert progress == [
        ["u-1", "18446744073709551615", 4294967295, "2024-02-29 23:59:59.999999", "2023-11-14 22:13:20"]
    ]
    # Hourly partitions are named by the hour's Unix time, as prune_progress expects.
    partitions = chdb.rows(
        f"SELECT DISTINCT partition_id FROM system.parts WHERE database = '{DATABASE}' "
        "AND table = 'events_cdc_progress' AND active"
    )
    assert partitions == [["1699999200"]]
    chdb.run(f"ALTER TABLE {DATABASE}.events_cdc_progress DROP PARTITION ID '1699999200'")
    assert chdb.rows(f"SELECT count() FROM {DATABASE}.events_cdc_progress") in ([[0]], [["0"]])


def test_redelivered_event_collapses_under_final_on_a_modern_server(chdb: ChSession, modern: Capabilities) -> None:
    row = (
        "('dup', 'x', fromUnixTimestamp64Micro(toInt64(1), 'UTC'), 'prod', '{}', 1, 1, 1, 0, "
        "fromUnixTimestamp64Micro(toInt64(1), 'UTC'), toDateTime(1700000000))"
    )
    for _ in range(2):
        chdb.run(
            f"INSERT INTO {DATABASE}.events (unique_id, event_type, occurred_at, environment, payload, "
            f"metadata_version, outbox_id, commit_lsn, commit_seq, committed_at, inserted_at) VALUES {row}"
        )
    counts = chdb.rows(
        f"SELECT count() FROM {DATABASE}.events FINAL WHERE unique_id = 'dup' "
        f"UNION ALL SELECT count() FROM {DATABASE}.events WHERE unique_id = 'dup'"
    )
    assert sorted(int(c) for (c,) in counts) == [1, 2]


def test_the_cluster_form_of_the_current_ddl_parses_on_a_modern_clickhouse(chdb: ChSession) -> None:
    # chDB has no cluster and no ZooKeeper to run ON CLUSTER against: EXPLAIN AST parses
    # each statement without executing it, so a syntax the 18.16 cluster never sees is checked too.
    capabilities = Capabilities(parse_version(str(chdb.rows("SELECT version()")[0][0])))
    statements = render_schema(SchemaNames(DATABASE, "events"), capabilities, "cdc_cluster")
    assert statements
    for name, statement in statements:
        assert "ON CLUSTER" in statement, name
        assert chdb.rows(f"EXPLAIN AST {statement}"), name
    # The check itself can fail: a cut statement does not parse.
    with pytest.raises(Exception, match="(?i)syntax"):  # chDB raises a plain Exception
        chdb.rows(f"EXPLAIN AST {statements[0][1][:-10]}")

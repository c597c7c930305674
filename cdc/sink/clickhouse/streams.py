"""The progress ledger keyed by slot: each ``stream`` (one per slot) has its own high-water mark and dedup window.

Every row carries the stream of the slot that delivered it (``UInt32``, 0 for the
one slot of an unsharded outbox; see cdc/shards/layout.py). The events table
holds it so that the materialized view can copy it into the progress table
inside the same INSERT; the dead-letter table has it in its sort key, so two
shards' dead letters at the same position of one transaction never collapse.

Tables made before streams existed lack the column. Stream 0 reads and writes
them exactly as before (no filter, no extra column); any other stream needs
``upgrade_statements()`` run once first (``ClickHouseSink.ensure_streams``), while nothing writes (``cdc migrate
--shards``, ``cdc shards reshard``): the view is dropped and created again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..base import SinkConfigError, StreamSummary
from .ddl import SchemaNames

__all__ = ["STREAM", "StreamBinding", "StreamQueries", "StreamSummary", "has_streams", "upgrade_statements"]

STREAM: Final = "stream"
_NEWEST: Final = "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT 1"


def has_streams(names: SchemaNames, columns: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether every table and the view carry the stream column."""
    plain = names.plain
    return all(STREAM in columns.get(t, {}) for t in (plain.events, plain.dead_letter, plain.progress, plain.progress_mv))


class StreamQueries:
    """The per-stream SQL of the sink; ``filtered`` is False only for stream 0 on tables without the column."""

    def __init__(self, names: SchemaNames, stream: int, filtered: bool, siblings: tuple[int, ...] = ()) -> None:
        self.stream = stream
        self.filtered = filtered
        progress = names.progress
        # Ints of ours, formatted as ones: no foreign text reaches the SQL.
        where = f"WHERE {STREAM} = {stream:d}" if filtered else ""
        # A shard's dedup window comes from every stream but its siblings': after
        # a reshard, ids the previous generation stored may come to it again.
        if not filtered:
            also = ""
        elif stream == 0:
            also = f"AND {STREAM} = 0"
        else:
            also = f"AND {STREAM} NOT IN ({', '.join(f'{s:d}' for s in siblings)})" if siblings else ""
        self.high_water = f"SELECT commit_lsn, commit_seq FROM {progress} {where} {_NEWEST}"
        self.latest = f"SELECT commit_lsn, committed_at FROM {progress} {where} {_NEWEST}"
        # The newest rows, handed over oldest first: the server sorts them twice so
        # that the client can stream them straight into the window (recent.py).
        recent = ("SELECT unique_id FROM (SELECT unique_id, commit_lsn, commit_seq FROM {} "
                  f"WHERE inserted_at >= toDateTime(%(since)s) AND unique_id != '' {also} "
                  "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT %(limit)s) ORDER BY commit_lsn, commit_seq")
        self.recent = recent.format(progress)
        # The same from the events themselves: what a lost row's ledger entry cannot vouch for.
        self.held = recent.format(names.events)
        # The hours holding each stream's newest row, by position and by insert time: never pruned.
        self.kept_hours = (
            f"SELECT argMax(toUInt32(toStartOfHour(inserted_at)), tuple(commit_lsn, commit_seq)), "
            f"toUInt32(toStartOfHour(max(inserted_at))) FROM {progress} GROUP BY {STREAM}"
            if filtered else
            f"SELECT toUInt32(toStartOfHour(inserted_at)), 0 FROM {progress} {_NEWEST}"
        )
        self.summary = (
            f"SELECT {STREAM}, argMax(tuple(commit_lsn, commit_seq), tuple(commit_lsn, commit_seq)), "
            f"argMax(committed_at, tuple(commit_lsn, commit_seq)), max(inserted_at), "
            f"countIf(unique_id != '' AND inserted_at >= now() - %(window)s) FROM {progress} GROUP BY {STREAM}"
        )


class StreamBinding:
    """One sink's stream: the SQL it reads its own positions with, and the column its writes carry.

    ``stream`` None reads every stream and writes none (the DBA commands' view of the tables).
    """

    def __init__(self, names: SchemaNames, stream: int | None, siblings: tuple[int, ...]) -> None:
        self.names = names
        self.stream = stream
        self.siblings = siblings
        self._queries: StreamQueries | None = None

    def forget(self) -> None:
        """The tables changed (made, or given the column): read which they are again."""
        self._queries = None

    def queries(self, tables_have_streams: bool) -> StreamQueries:
        if self._queries is None:
            if self.stream and not tables_have_streams:
                raise self.needs_streams()
            self._queries = StreamQueries(self.names, self.stream or 0,
                                          filtered=tables_have_streams and self.stream is not None,
                                          siblings=self.siblings)
        return self._queries

    def needs_streams(self) -> SinkConfigError:
        return SinkConfigError(
            f"ClickHouse tables of {self.names.plain.database}.{self.names.plain.events} predate sharding "
            "(no stream column): run `cdc migrate --shards N` or `cdc shards reshard N`, which add it"
        )

    def add(self, tables_have_streams: bool, columns: list[list[Any]]) -> list[list[Any]]:
        """``columns`` as written: with the stream's column appended, except for stream 0 (its default)."""
        stream = self.stream
        if stream is None:
            raise SinkConfigError("this view of the sink reads every stream and writes none")
        if not stream:
            return columns
        if not tables_have_streams:
            raise self.needs_streams()
        return [*columns, [stream] * len(columns[0])]


def upgrade_statements(names: SchemaNames, columns: Mapping[str, Mapping[str, str]], view_sql: str) -> list[str]:
    """What makes tables created before streams existed carry them; [] when they do.

    ``view_sql`` is the view's CREATE statement as ``render_schema`` makes it now.
    The dead letters' sort key gains the column in the same ALTER that adds it
    (ClickHouse allows that only for a column without a DEFAULT expression).
    """
    plain = names.plain
    out = []
    if STREAM not in columns.get(plain.events, {}):
        out.append(f"ALTER TABLE {names.events} ADD COLUMN {STREAM} UInt32 DEFAULT 0")
    if STREAM not in columns.get(plain.progress, {}):
        out.append(f"ALTER TABLE {names.progress} ADD COLUMN {STREAM} UInt32 DEFAULT 0")
    if STREAM not in columns.get(plain.dead_letter, {}):
        out.append(
            f"ALTER TABLE {names.dead_letter} ADD COLUMN {STREAM} UInt32, "
            f"MODIFY ORDER BY (commit_lsn, commit_seq, {STREAM})"
        )
    if STREAM not in columns.get(plain.progress_mv, {}):
        out.append(f"DROP TABLE IF EXISTS {names.progress_mv}")
        out.append(view_sql)
    return out

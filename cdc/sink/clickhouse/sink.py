"""The ClickHouse sink: batches go in with one INSERT each; the high-water mark comes back out fast.

Tables (see ``sql/clickhouse``), for ``table="events"``:

- ``events``: the events, ReplacingMergeTree, so a row delivered twice collapses;
- ``events_dead_letter``: rows the pipeline could not take, collapsing the same way;
- ``events_cdc_progress``: (unique_id, commit_lsn, commit_seq, committed_at,
  inserted_at) of every event, filled by the materialized view
  ``events_cdc_progress_mv`` inside the events' own INSERT. It is small once
  pruned, so the high-water mark stays a cheap query with billions of events.

Timestamps are ``DateTime64(6, 'UTC')`` (microseconds) on ClickHouse >= 20.1 and
``DateTime('UTC')`` (whole seconds: fractions are dropped) before.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from contextlib import closing
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Final

import structlog
from structlog.typing import FilteringBoundLogger

from ...core.events import EVENT_COLUMNS, Batch
from ..base import LatestCommit, SinkConfigError
from .connection import ClickHouseConnection, DatabaseMissing
from .ddl import DEAD_LETTER_COLUMNS, EVENTS_COLUMNS, Capabilities, SchemaNames, parse_version, render_schema
from .layout import Layout, SchemaInspector
from .url import parse_clickhouse_url, redact_url

__all__ = ["ClickHouseSink", "LatestCommit", "redact_url"]

_OCCURRED_AT: Final = EVENT_COLUMNS.index("occurred_at")
_COMMITTED_AT: Final = EVENT_COLUMNS.index("committed_at")
_HOUR: Final = 3600
# Rows per block of the window's rebuild: ~10 MB of row tuples and strings at a time.
_ID_BLOCK: Final = 65536


class ClickHouseSink:
    """Stores batches in ClickHouse; see the module docstring for the tables.

    The constructor connects and reads the server version: an unreachable
    server or refused login raises SinkConfigError (without the password).
    Call ``ensure_schema()`` once before writing.
    """

    def __init__(
        self,
        url: str,
        table: str = "events",
        *,
        password: str | None = None,
        log: FilteringBoundLogger | None = None,
        connect_timeout: float | None = None,
        send_receive_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        target = parse_clickhouse_url(url, password=password, environ=environ)
        # Out of this frame's locals, which tracebacks with locals would print.
        del password
        self.url = target.redacted_url
        self.names = SchemaNames(target.database, table)
        base_log = log if log is not None else structlog.get_logger("cdc.sink.clickhouse")
        self.log = base_log.bind(clickhouse=target.address, database=target.database, table=table)
        self._conn = ClickHouseConnection(
            target, log=self.log, connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout
        )
        # Only to create the database: the login fails while it is missing.
        self._bootstrap: ClickHouseConnection | None = None
        try:
            version_text = str(self._conn.setup_query("SELECT version()")[0][0])
        except DatabaseMissing:
            self._bootstrap = ClickHouseConnection(
                target,
                database="system",
                log=self.log,
                connect_timeout=connect_timeout,
                send_receive_timeout=send_receive_timeout,
            )
            version_text = str(self._bootstrap.setup_query("SELECT version()")[0][0])
        self.server_version = parse_version(version_text)
        self.capabilities = Capabilities(self.server_version)
        self._inspector = SchemaInspector(self.names, self.capabilities)
        self._layout: Layout | None = None

        names = self.names
        self._insert_events_sql = f"INSERT INTO {names.events} ({', '.join(EVENTS_COLUMNS)}) VALUES"
        self._insert_dead_letters_sql = (
            f"INSERT INTO {names.dead_letter} ({', '.join(DEAD_LETTER_COLUMNS)}) VALUES"
        )
        newest = "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT 1"
        self._high_water_sql = f"SELECT commit_lsn, commit_seq FROM {names.progress} {newest}"
        self._latest_sql = f"SELECT commit_lsn, committed_at FROM {names.progress} {newest}"
        self._newest_hour_sql = f"SELECT toUInt32(toStartOfHour(inserted_at)) FROM {names.progress} {newest}"
        # The newest rows, handed over oldest first: the server sorts them twice
        # so that the client can stream them straight into the window.
        self._recent_sql = (
            "SELECT unique_id FROM (SELECT unique_id, commit_lsn, commit_seq "
            f"FROM {names.progress} WHERE inserted_at >= toDateTime(%(since)s) AND unique_id != '' "
            "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT %(limit)s) ORDER BY commit_lsn, commit_seq"
        )
        self._partitions_sql = (
            "SELECT DISTINCT partition_id FROM system.parts "
            "WHERE database = %(database)s AND table = %(table)s AND active"
        )
        self.log.info(
            "clickhouse.connected",
            server_version=version_text,
            timestamp_type=self.capabilities.timestamp_sql,
            compression=self._conn.compression,
        )

    # -- schema -------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the database, tables and view when missing; check existing ones. Idempotent.

        Raises SinkConfigError, with what to do, when the server is unreachable
        or an existing table lacks what the sink needs.
        """
        statements = dict(render_schema(self.names, self.capabilities))
        plain = self.names.plain
        if self._bootstrap is not None:
            self._bootstrap.setup_query(statements["database"])
            self._bootstrap.close()
            self._bootstrap = None
        else:
            self._conn.setup_query(statements["database"])
        query = self._conn.setup_query
        for name in ("events", "dead_letter"):
            query(statements[name])
        # Checked before the view is made over them, for a clearer message than the view's.
        self._inspector.verify(query, (plain.events, plain.dead_letter))
        for name in ("progress", "progress_mv"):
            query(statements[name])
        columns = self._inspector.verify(
            query, (plain.events, plain.dead_letter, plain.progress, plain.progress_mv)
        )
        self._layout = self._inspector.layout(columns)
        self.log.info(
            "clickhouse.schema_ready",
            occurred_at=self._layout.occurred_at.sql,
            committed_at=self._layout.committed_at.sql,
        )

    def timestamp_bounds(self) -> tuple[datetime, datetime]:
        """The inclusive range of timestamps every column can store; rows outside must be dead-lettered."""
        return self._current_layout(required=False).bounds

    def _current_layout(self, *, required: bool = True) -> Layout:
        if self._layout is not None:
            return self._layout
        if self._bootstrap is not None and not required:
            # No database yet, so nothing to look at: the tables will be ours.
            return self._inspector.default_layout()
        plain = self.names.plain
        tables = (plain.events, plain.dead_letter)
        columns = self._inspector.columns(self._conn.query, tables)
        if all(columns[table] for table in tables):
            self._layout = self._inspector.layout(columns)
            return self._layout
        if required:
            raise SinkConfigError(
                f"ClickHouse tables of {plain.database}.{plain.events} do not exist; run `cdc migrate` to create them"
            )
        return self._inspector.default_layout()

    # -- writing ------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Store the batch: dead letters, then events, one INSERT each.

        Raises SinkError when ClickHouse fails (retry: re-sent rows collapse),
        ValueError/TypeError when a value cannot be stored at all (a timestamp
        out of range or not int microseconds, a naive dead letter committed_at,
        a number too big for its column). The batch itself is never modified.
        """
        layout = self._current_layout()
        # One value per batch: the batch's progress rows then share one hourly
        # partition, so they land in a single part.
        inserted_at = int(time.time())
        dead_letters = self._dead_letter_columns(batch, layout, inserted_at)
        events = self._event_columns(batch, layout, inserted_at)
        started = time.monotonic()
        if dead_letters is not None:
            self._conn.insert(self._insert_dead_letters_sql, dead_letters)
        if events is not None:
            self._conn.insert(self._insert_events_sql, events)
        self.log.debug(
            "clickhouse.wrote",
            seq=batch.seq,
            rows=batch.rows,
            dead_letters=len(batch.dead_letters),
            seconds=round(time.monotonic() - started, 4),
        )

    def _event_columns(self, batch: Batch, layout: Layout, inserted_at: int) -> list[list[Any]] | None:
        if len(batch.columns) != len(EVENT_COLUMNS):
            raise ValueError(f"batch {batch.seq} has {len(batch.columns)} columns, not {len(EVENT_COLUMNS)}")
        rows = batch.rows
        if rows == 0:
            return None
        if any(len(column) != rows for column in batch.columns):
            raise ValueError(f"batch {batch.seq} has columns of different lengths")
        # A new outer list; the batch's own column lists go to the driver as they
        # are (it sends slices of them), and from_micros never changes them, so a
        # retried batch sends the same values.
        columns = list(batch.columns)
        columns[_OCCURRED_AT] = layout.occurred_at.from_micros(columns[_OCCURRED_AT], "occurred_at")
        columns[_COMMITTED_AT] = layout.committed_at.from_micros(columns[_COMMITTED_AT], "committed_at")
        columns.append([inserted_at] * rows)
        return columns

    def _dead_letter_columns(self, batch: Batch, layout: Layout, inserted_at: int) -> list[list[Any]] | None:
        letters = batch.dead_letters
        if not letters:
            return None
        committed_at = [letter.committed_at for letter in letters]
        return [
            [letter.commit_lsn for letter in letters],
            [letter.commit_seq for letter in letters],
            layout.dead_letter_committed_at.to_ticks(committed_at, "dead letter committed_at"),
            [letter.relation for letter in letters],
            [letter.reason for letter in letters],
            [letter.row_json for letter in letters],
            [inserted_at] * len(letters),
        ]

    def mark_position(self, commit_lsn: int, commit_seq: int) -> None:
        """Record a position with no event behind it (unique_id ''), so high_water_mark() moves past it.

        The pipeline marks the end of an initial snapshot copy this way: without
        the mark, a copy cut short by a crash would look like a finished one.
        """
        now = datetime.now(timezone.utc)
        layout = self._current_layout()
        self._conn.insert(
            f"INSERT INTO {self.names.progress} (unique_id, commit_lsn, commit_seq, committed_at, inserted_at) VALUES",
            [[""], [commit_lsn], [commit_seq], layout.committed_at.to_ticks([now], "committed_at"), [int(now.timestamp())]],
        )

    # -- reading ------------------------------------------------------------

    def high_water_mark(self) -> tuple[int, int] | None:
        """(commit_lsn, commit_seq) of the newest stored event, or None when there is none."""
        rows = self._conn.query(self._high_water_sql)
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def recent_unique_ids(self, max_count: int, max_age_seconds: float) -> list[str]:
        """unique_ids of the newest events (by commit position) inserted in the last max_age_seconds, oldest first.

        Age counts from when the sink inserted them, by this machine's clock
        (the clock that stamped them). An id stored twice is listed once.
        """
        return list(dict.fromkeys(uid for block in self.recent_unique_id_blocks(max_count, max_age_seconds)
                                  for uid in block))

    def recent_unique_id_blocks(self, max_count: int, max_age_seconds: float) -> Generator[list[str], None, None]:
        """``recent_unique_ids`` streamed a block at a time, oldest first; an id stored twice comes twice.

        For rebuilding the window without holding a million ids (and their row
        tuples) at once: the window counts a repeat as a duplicate anyway.
        """
        if max_count <= 0:
            return
        since = int(time.time() - max_age_seconds)
        params = {"since": max(since, 0), "limit": int(max_count)}
        # closing(): a caller that stops early must free the connection now, not when
        # the inner generator happens to be collected.
        with closing(self._conn.query_blocks(self._recent_sql, params, block_rows=_ID_BLOCK)) as blocks:
            for rows in blocks:
                yield [row[0] for row in rows]

    def latest(self) -> LatestCommit | None:
        """The newest stored event's commit LSN and commit time, or None when there is none."""
        rows = self._conn.query(self._latest_sql)
        return LatestCommit(int(rows[0][0]), rows[0][1]) if rows else None

    def count_events(self, *, final: bool = False) -> int:
        """Rows in the events table; ``final`` counts a re-delivered row once (a slower query)."""
        return self._count(self.names.events, final)

    def count_dead_letters(self, *, final: bool = False) -> int:
        """Rows in the dead-letter table; ``final`` counts a re-delivered row once."""
        return self._count(self.names.dead_letter, final)

    def _count(self, table_sql: str, final: bool) -> int:
        rows = self._conn.query(f"SELECT count() FROM {table_sql}{' FINAL' if final else ''}")
        return int(rows[0][0])

    # -- upkeep -------------------------------------------------------------

    def prune_progress(self, keep_seconds: float) -> int:
        """Drop the progress table's hourly partitions older than keep_seconds; returns how many.

        Never drops the newest partition, nor the one holding the high-water
        mark (they differ only if the clock went back). Keep at least the
        dedup window of ``recent_unique_ids`` here.
        """
        cutoff = time.time() - keep_seconds
        rows = self._conn.query(
            self._partitions_sql,
            {"database": self.names.plain.database, "table": self.names.plain.progress},
        )
        # Partition ids of toStartOfHour(DateTime) are that hour as a Unix time.
        hours = sorted(int(pid) for (pid,) in rows if str(pid).isdigit())
        if len(hours) <= 1:
            return 0
        keep = {hours[-1]}
        newest = self._conn.query(self._newest_hour_sql)
        if newest:
            keep.add(int(newest[0][0]))
        doomed = [hour for hour in hours if hour + _HOUR <= cutoff and hour not in keep]
        for hour in doomed:
            # The id is our own int, formatted back: no foreign text reaches the SQL.
            self._conn.query(f"ALTER TABLE {self.names.progress} DROP PARTITION ID '{hour:d}'")
        if doomed:
            self.log.info("clickhouse.progress_pruned", partitions=len(doomed), kept=len(hours) - len(doomed))
        return len(doomed)

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        self._conn.close()
        if self._bootstrap is not None:
            self._bootstrap.close()

    def __enter__(self) -> ClickHouseSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClickHouseSink({self.url!r}, table={self.names.plain.events!r})"

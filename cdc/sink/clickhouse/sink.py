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

With ``cluster`` (``--clickhouse-cluster``) the tables are Replicated and made
ON CLUSTER; see docs/ha.md for what that changes: a retried batch is the same
block byte for byte (so the replicas drop it as a repeat), and the progress
table is synced from the other replicas before the high-water mark is read.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import Final

import structlog
from structlog.typing import FilteringBoundLogger

from ...core.events import EVENT_COLUMNS, Batch
from ..base import LatestCommit, SinkConfigError, SinkError
from .columns import dead_letter_columns, event_columns
from .connection import ClickHouseConnection, Connection, DatabaseMissing
from .ddl import PROGRESS_COLUMNS, Capabilities, SchemaNames, parse_version, render_schema
from .layout import Layout, SchemaInspector
from .queries import SinkQueries
from .recent import recent_id_blocks
from .ledger import check_ledger
from .stored import ClickHouseStoredIds
from .streams import StreamBinding, StreamQueries, upgrade_statements
from .url import parse_clickhouse_url, redact_url

__all__ = ["ClickHouseSink", "LatestCommit", "redact_url"]

# The progress table's columns, as the materialized view selects them from the events.
_PROGRESS_FROM_EVENTS: Final = (*(EVENT_COLUMNS.index(name) for name in PROGRESS_COLUMNS[:-1]), len(EVENT_COLUMNS))
_HOUR: Final = 3600


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
        stream: int | None = 0,
        siblings: tuple[int, ...] = (),
        cluster: str | None = None,
    ) -> None:
        target = parse_clickhouse_url(url, password=password, environ=environ)
        # Out of this frame's locals, which tracebacks with locals would print.
        del password
        names = SchemaNames(target.database, table)  # a bad name is refused before connecting
        self._target = target
        self.cluster = cluster or None
        base_log = log if log is not None else structlog.get_logger("cdc.sink.clickhouse")
        bound_log = base_log.bind(clickhouse=target.address, database=target.database, table=table)
        conn = ClickHouseConnection(
            target, log=bound_log, connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout
        )
        # Only to create the database: the login fails while it is missing.
        bootstrap: ClickHouseConnection | None = None
        try:
            version_text = str(conn.setup_query("SELECT version()")[0][0])
        except DatabaseMissing:
            bootstrap = ClickHouseConnection(
                target,
                database="system",
                log=bound_log,
                connect_timeout=connect_timeout,
                send_receive_timeout=send_receive_timeout,
            )
            version_text = str(bootstrap.setup_query("SELECT version()")[0][0])
        self._bind(conn, target.redacted_url, names, version_text, bound_log, bootstrap=bootstrap,
                   stream=stream, siblings=siblings)

    def _bind(
        self, conn: Connection, url: str, names: SchemaNames, version_text: str, log: FilteringBoundLogger,
        *, bootstrap: Connection | None = None, stream: int | None = 0, siblings: tuple[int, ...] = (),
    ) -> None:
        """Everything after connecting, shared with sinks that reach ClickHouse another way (cdc/sink/chdb).

        ``stream``: the slot's (cdc/sink/clickhouse/streams.py); None reads every stream and writes none.
        """
        self.url = url
        self.names = names
        self.log = log
        self._conn = conn
        self._bootstrap = bootstrap
        self.server_version = parse_version(version_text)
        self.capabilities = Capabilities(self.server_version)
        self._inspector = SchemaInspector(self.names, self.capabilities, replicated=self.cluster is not None)
        self._layout: Layout | None = None
        # The batch being retried and the inserted_at it was first sent with.
        self._retrying: tuple[Batch, int] | None = None

        self.stream = stream
        self._streams = StreamBinding(self.names, stream, siblings)
        self._sql = SinkQueries.for_names(self.names, stream_column=bool(stream))
        self.log.info(
            "clickhouse.connected",
            server_version=version_text,
            timestamp_type=self.capabilities.timestamp_sql,
            compression=self._conn.compression,
        )

    @property
    def connection(self) -> Connection:
        return self._conn

    # -- schema -------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the database, tables and view when missing; check existing ones. Idempotent.

        Raises SinkConfigError, with what to do, when the server is unreachable
        or an existing table lacks what the sink needs.
        """
        statements = dict(render_schema(self.names, self.capabilities, self.cluster))
        plain = self.names.plain
        owned = (plain.events, plain.dead_letter, plain.progress, plain.progress_mv)
        if self.cluster is not None and self._bootstrap is None and len(
                self._inspector.engines(self._conn.setup_query, owned)) == len(owned):
            # Made already (`cdc migrate`): ON CLUSTER again would wait for every
            # replica, down ones too, until distributed_ddl_task_timeout.
            statements = {}
        if self._bootstrap is not None:
            self._bootstrap.setup_query(statements["database"])
            self._bootstrap.close()
            self._bootstrap = None
        elif statements:
            self._conn.setup_query(statements["database"])
        query = self._conn.setup_query
        for name in ("events", "dead_letter"):
            if statements:
                query(statements[name])
        # Checked before the view is made over them, for a clearer message than the view's.
        self._inspector.verify(query, (plain.events, plain.dead_letter))
        for name in ("progress", "progress_mv", "events_all"):
            # ClickHouse checks a view's query even when IF NOT EXISTS will skip it,
            # and a view made before streams cannot select a column its table lacks.
            if name in statements and not (
                    name == "progress_mv" and self._inspector.engines(query, (plain.progress_mv,))):
                query(statements[name])
        columns = self._inspector.verify(
            query, (plain.events, plain.dead_letter, plain.progress, plain.progress_mv)
        )
        self._layout = self._inspector.layout(columns)
        self._streams.forget()
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
        columns = self._inspector.columns(self._conn.query, (*tables, plain.progress, plain.progress_mv))
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
        retry = self._retrying is not None and self._retrying[0] is batch
        inserted_at = self._stamp(batch)
        letters, rows = dead_letter_columns(batch, layout, inserted_at), event_columns(batch, layout, inserted_at)
        dead_letters = None if letters is None else self._streams.add(layout.streams, letters)
        events = None if rows is None else self._streams.add(layout.streams, rows)
        started = time.monotonic()
        if dead_letters is not None:
            self._conn.insert(self._sql.insert_dead_letters, dead_letters)
        if events is not None:
            self._conn.insert(self._sql.insert_events, events)
            if retry and self.cluster is not None:
                # ClickHouse 18.16 skips the materialized view for an events block it drops as a repeat: a
                # replica that died after storing the events, before their progress rows, leaves those
                # missing. The block the view would have made, sent here, is stored if missing and
                # dropped as a repeat if not (same rows, same block).
                self._conn.insert(self._sql.insert_progress,
                                  [events[i] for i in _PROGRESS_FROM_EVENTS] + events[len(EVENT_COLUMNS) + 1:])
        self._retrying = None
        self.log.debug(
            "clickhouse.wrote",
            seq=batch.seq,
            rows=batch.rows,
            dead_letters=len(batch.dead_letters),
            seconds=round(time.monotonic() - started, 4),
        )

    def _stamp(self, batch: Batch) -> int:
        """The batch's inserted_at: one value per batch, so its progress rows share one hourly partition and
        land in a single part; and the same value on every retry of it, so a retry is the same block byte for
        byte, which Replicated tables drop when the first attempt was stored after all (a lost answer)."""
        if self._retrying is not None and self._retrying[0] is batch:
            return self._retrying[1]
        stamp = int(time.time())
        self._retrying = (batch, stamp)
        return stamp

    # -- streams ------------------------------------------------------------

    def _stream_queries(self) -> StreamQueries:
        return self._streams.queries(self._current_layout(required=False).streams)

    def ensure_streams(self) -> list[str]:
        """Give tables made before sharding the stream column (see streams.py); the statements run.

        Call only while nothing writes to the tables: the view is recreated.
        """
        plain = self.names.plain
        tables = (plain.events, plain.dead_letter, plain.progress, plain.progress_mv)
        columns = self._inspector.columns(self._conn.query, tables)
        view = dict(render_schema(self.names, self.capabilities))["progress_mv"]
        statements = upgrade_statements(self.names, columns, view)
        if statements and self.cluster is not None:
            # A cluster's tables are made with the stream column; altering them replica by replica is not done.
            raise SinkConfigError("the tables of a ClickHouse cluster are made with the stream column; these "
                                  "predate it: recreate them (docs/ha.md) before sharding")
        for statement in statements:
            self._conn.setup_query(statement)
        if statements:
            self._layout = None
            self._streams.forget()
            self.log.info("clickhouse.streams_added", statements=len(statements))
        return statements

    def mark_position(self, commit_lsn: int, commit_seq: int) -> None:
        """Record a position with no event behind it (unique_id ''), so high_water_mark() moves past it.

        The pipeline marks the end of an initial snapshot copy this way: without
        the mark, a copy cut short by a crash would look like a finished one.
        """
        now = datetime.now(timezone.utc)
        layout = self._current_layout()
        self._conn.insert(self._sql.insert_progress, self._streams.add(layout.streams, [
            [""], [commit_lsn], [commit_seq], layout.committed_at.to_ticks([now], "committed_at"),
            [int(now.timestamp())]]))

    # -- reading ------------------------------------------------------------

    def sync_progress(self) -> None:
        """In a cluster: wait until this replica holds every part of the progress table that any replica
        acknowledged (``SYSTEM SYNC REPLICA``), so what is read next is not behind what was stored."""
        if self.cluster is None:
            return
        try:
            self._conn.query(f"SYSTEM SYNC REPLICA {self.names.progress}")
        except SinkError as exc:
            raise SinkError(
                f"{exc}; while waiting for this replica to fetch what the others stored (SYSTEM SYNC REPLICA "
                f"{self.names.plain.progress}): bring back the replica that holds it, then run cdc again"
            ) from None

    def high_water_mark(self) -> tuple[int, int] | None:
        """(commit_lsn, commit_seq) of the newest stored event, or None when there is none."""
        self.sync_progress()
        rows = self._conn.query(self._stream_queries().high_water)
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def recent_unique_ids(self, max_count: int, max_age_seconds: float, *, held: bool = False) -> list[str]:
        """unique_ids of the newest events (by commit position) inserted in the last max_age_seconds, oldest first.

        Age counts from when the sink inserted them, by this machine's clock (the clock that stamped them).
        An id stored twice is listed once. From the progress ledger (fast), or with ``held`` from the events
        table itself (it reads the whole inserted_at column).
        """
        blocks = self.recent_unique_id_blocks(max_count, max_age_seconds, held=held)
        return list(dict.fromkeys(uid.decode() for block in blocks for uid in block))

    def recent_unique_id_blocks(
        self, max_count: int, max_age_seconds: float, *, held: bool = False
    ) -> Generator[Sequence[bytes], None, None]:
        """``recent_unique_ids`` streamed in blocks of UTF-8 bytes, oldest first, repeats kept (recent.py)."""
        if max_count > 0:
            self.sync_progress()
            queries = self._stream_queries()
            query = queries.held if held else queries.recent
            yield from recent_id_blocks(self._conn, query, max_count, max_age_seconds)

    def ledger_warning(self) -> str | None:
        return check_ledger(self._conn, self.names).warning

    def stored_ids(self, relation: str) -> ClickHouseStoredIds:
        return ClickHouseStoredIds(ClickHouseConnection(self._target, log=self.log), self.names, relation)

    def latest(self) -> LatestCommit | None:
        """The newest stored event's commit LSN and commit time, or None when there is none."""
        rows = self._conn.query(self._stream_queries().latest)
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
            self._sql.partitions,
            {"database": self.names.plain.database, "table": self.names.plain.progress},
        )
        # Partition ids of toStartOfHour(DateTime) are that hour as a Unix time.
        hours = sorted(int(pid) for (pid,) in rows if str(pid).isdigit())
        if len(hours) <= 1:
            return 0
        keep = {hours[-1]}
        for by_position, by_time in self._conn.query(self._stream_queries().kept_hours):
            keep.update((int(by_position), int(by_time)))
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

"""``cdc backfill``: deliver again the outbox rows created in a time range, through the pipeline's own path.

Rows are read from one consistent snapshot (cdc/pg/outbox_range.py) and go
through a pipeline made by ``cdc.pipeline.build``, the same as ``cdc run``'s
(conversion, dead letters, dedup, batches, the flusher), fed the way the
initial copy feeds it (cdc/pipeline/snapshot.py), with:

- ``high_water_mark=None``: nothing is skipped by position;
- a dedup window rebuilt from the sink (``recent_unique_ids``), as ``cdc run``
  does: a unique_id stored recently is skipped as a duplicate;
- position (1 + (id >> 32), id & 0xFFFFFFFF), committed_at = the row's
  created_at: see cdc/admin/positions.py. These sort below every streamed
  position, so the high-water mark ``cdc run`` resumes from never moves.

An event ClickHouse already holds is written again and collapses with it
(ReplacingMergeTree, same key); the surviving copy then carries the backfill
position. Nothing is acknowledged on any slot, and running it twice is harmless.
"""

from __future__ import annotations

import threading
from contextlib import closing
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ..core import positions
from ..core.outbox import outbox_relation
from ..logs import quiet_logger
from ..pg.connect import Conn, connect
from ..pg.outbox_range import OutboxRange, timestamp
from ..pgoutput.messages import datetime_to_pg_epoch_micros
from ..pipeline import build
from ..settings import Settings
from ..sink import open_sink
from ..pg.shards import read_sharding, streaming_generation
from ..shards.layout import Shard, shard_settings
from ..sink.base import Sink
from . import AdminError

_PROGRESS_EVERY = 1000


@dataclass(slots=True)
class Summary:
    since: str
    until: str | None
    rows_read: int = 0
    events_stored: int = 0
    dead_letters_stored: int = 0
    duplicates: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backfill:
    """Use as a context manager: entering opens the sink, then the snapshot, and counts the rows (``total``).

    ``settings`` give the batch size (``batch_rows``) and the dedup window (``dedup_window``, ``dedup_max_age``).
    """

    def __init__(self, settings: Settings, *, since: str, until: str | None, log: Any = None) -> None:
        self.s = settings
        self._since_text, self._until_text = since, until
        self.log = log if log is not None else quiet_logger()
        self.total = 0
        self.since: datetime | None = None
        self.until: datetime | None = None
        self._sink: Sink | None = None
        self._conn: Conn | None = None
        self._range: OutboxRange | None = None
        # A sharded outbox: each shard's rows go through a pipeline of its own (its stream, its dedup window).
        self.shards: list[Shard] | None = None

    def __enter__(self) -> Backfill:
        s = self.s
        self._sink = open_sink(s.sink_url, s, log=self.log)
        try:
            self._sink.ensure_schema()
            hwm = self._sink.high_water_mark()
            if hwm is not None and hwm[0] == positions.SNAPSHOT_LSN:
                # cdc run recognises an interrupted first copy by this position; rows of ours would hide it.
                raise AdminError(
                    "ClickHouse's newest position is the first copy's: that copy was interrupted. Run "
                    "`cdc run --create-slot` to finish it before backfilling"
                )
            self._conn = connect(s.pg_dsn, application_name="cdc-backfill")
            generation = streaming_generation(read_sharding(self._conn, s.outbox_schema, s.slot), False)
            self.shards = None if generation is None else generation.shard_list()
            self._open_snapshot(self._conn)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _open_snapshot(self, conn: Conn) -> None:
        self.since = timestamp(conn, "--since", self._since_text)
        self.until = timestamp(conn, "--until", self._until_text) if self._until_text else None
        if self.until is not None and self.until <= self.since:
            raise AdminError(f"--until {self.until.isoformat()} is not after --since {self.since.isoformat()}: "
                             "nothing to backfill")
        self._range = OutboxRange(conn, self.s.outbox_schema, self.s.outbox_table, self.since, self.until)
        count, low, high = self._range.open()
        for outbox_id in (low, high):
            if outbox_id is not None and not 0 <= outbox_id <= positions.MAX_BACKFILL_ID:
                raise AdminError(f"outbox id {outbox_id} is outside 0..2^51-1: backfill cannot give it a position")
        self.total = count

    def run(self, advance: Callable[[int], None] = lambda n: None) -> Summary:
        """Deliver the rows; ``advance(n)`` is called as rows are read (for a progress bar)."""
        assert self._sink is not None and self._range is not None and self.since is not None
        s, started = self.s, time.monotonic()
        summary = Summary(self.since.isoformat(), self.until.isoformat() if self.until else None)
        try:
            if self.shards is None:
                self._add(summary, deliver(s, self._sink, self._range.rows(None), remember_recent_ids=True,
                                           log=self.log, advance=advance))
            else:
                for shard in self.shards:
                    settings = shard_settings(s, shard)
                    # Each shard's rows go through a pipeline of its own: its stream, its dedup window.
                    with closing(open_sink(settings.sink_url, settings, log=self.log)) as sink:
                        self._add(summary, deliver(settings, sink, self._range.rows(shard.row_filter),
                                                   remember_recent_ids=True, log=self.log, advance=advance))
        finally:
            self._range.close()
        summary.seconds = round(time.monotonic() - started, 3)
        return summary

    @staticmethod
    def _add(summary: Summary, delivered: Delivered) -> None:
        summary.rows_read += delivered.rows_read
        summary.events_stored += delivered.events_stored
        summary.dead_letters_stored += delivered.dead_letters_stored
        summary.duplicates += delivered.duplicates


@dataclass(frozen=True, slots=True)
class Delivered:
    rows_read: int
    events_stored: int
    dead_letters_stored: int
    duplicates: int


def deliver(
    settings: Settings, sink: Sink, rows: Iterable[tuple[tuple[bytes | None, ...], int, datetime]], *,
    remember_recent_ids: bool, log: Any, advance: Callable[[int], None] = lambda n: None,
) -> Delivered:
    """Outbox rows (REQUIRED_COLUMNS as text bytes, id, created_at) through a pipeline made by ``build``, each
    at its backfill position, stored before this returns. Backfill and ``cdc verify --repair`` deliver this way.

    ``remember_recent_ids``: skip ids the sink stored recently (backfill); a repair's rows are proven absent.
    """
    pipeline = build(settings, sink, log=log, stop=threading.Event())
    collector = pipeline.parts.collector
    relation = outbox_relation(settings.outbox_schema, settings.outbox_table)
    read = unreported = 0
    try:
        if remember_recent_ids:
            pipeline.remember_recent_ids()
        for values, outbox_id, created in rows:
            lsn, seq = positions.backfill_position(outbox_id)
            # Every row has a position of its own (see positions), so one row per call.
            collector.rows(relation, (values,), lsn, seq, datetime_to_pg_epoch_micros(created))
            read += 1
            unreported += 1
            if unreported >= _PROGRESS_EVERY:
                advance(unreported)
                unreported = 0
        advance(unreported)
        pipeline.store_all()
    finally:
        pipeline.abort()
        pipeline.close()
    flusher = pipeline.parts.flusher
    return Delivered(read, flusher.rows_stored, flusher.dead_letters_stored, collector.counters.duplicates)

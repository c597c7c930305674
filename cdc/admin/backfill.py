"""``cdc backfill``: deliver again the outbox rows created in a time range, through the pipeline's own path.

Rows are read with COPY inside one REPEATABLE READ, READ ONLY transaction (a
consistent view: the count shown and the rows sent agree), filtered on
created_at (the partition key, so only the partitions in range are read), in
id order. Each row goes through a ``Collector`` (conversion, dead letters,
dedup), a ``BatchBuilder`` and a ``Flusher`` exactly as the initial copy in
cdc/pipeline.py does, with:

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

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from ..backoff import Backoff
from ..buffer import BatchBuilder
from ..collector import Collector
from ..dedup import DedupWindow
from ..outbox import REQUIRED_COLUMNS
from ..pgoutput.messages import Column, Relation
from ..settings import Settings
from ..sink.clickhouse import ClickHouseSink
from ..tracker import AckTracker
from . import AdminError, positions
from .clickhouse import quiet_logger
from .pg import Conn, connect, describe

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)
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
    """Use as a context manager: entering opens ClickHouse, then the snapshot, and counts the rows (``total``)."""

    def __init__(
        self, settings: Settings, *, since: str, until: str | None, dedup_window: int, dedup_max_age: float,
        batch_rows: int, log: Any = None,
    ) -> None:
        self.s = settings
        self._since_text, self._until_text = since, until
        self._dedup_window, self._dedup_max_age, self._batch_rows = dedup_window, dedup_max_age, batch_rows
        self.log = log if log is not None else quiet_logger()
        self.total = 0
        self.since: datetime | None = None
        self.until: datetime | None = None
        self._sink: ClickHouseSink | None = None
        self._conn: Conn | None = None

    def __enter__(self) -> Backfill:
        s = self.s
        self._sink = ClickHouseSink(s.clickhouse_url, s.clickhouse_table, password=s.clickhouse_password, log=self.log)
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
        self.since = _timestamp(conn, "--since", self._since_text)
        self.until = _timestamp(conn, "--until", self._until_text) if self._until_text else None
        if self.until is not None and self.until <= self.since:
            raise AdminError(f"--until {self.until.isoformat()} is not after --since {self.since.isoformat()}: "
                             "nothing to backfill")
        conn.autocommit = False
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            count, low, high = conn.execute(
                sql.SQL("SELECT count(*), min(id), max(id) FROM {} WHERE {}").format(self._table(), self._where())
            ).fetchone()  # type: ignore[misc]
        except psycopg.Error as exc:
            raise AdminError(f"cannot read {self.s.outbox_schema}.{self.s.outbox_table}: {describe(exc)}") from None
        for outbox_id in (low, high):
            if outbox_id is not None and not 0 <= int(outbox_id) <= positions.MAX_BACKFILL_ID:
                raise AdminError(f"outbox id {outbox_id} is outside 0..2^51-1: backfill cannot give it a position")
        self.total = int(count)

    def _table(self) -> sql.Composable:
        return sql.Identifier(self.s.outbox_schema, self.s.outbox_table)

    def _where(self) -> sql.Composable:
        # The bounds are datetimes PostgreSQL itself parsed: adapted as values, never pasted text.
        cond = sql.SQL("created_at >= {}").format(sql.Literal(self.since))
        if self.until is not None:
            cond = sql.SQL("{} AND created_at < {}").format(cond, sql.Literal(self.until))
        return cond

    def run(self, advance: Callable[[int], None] = lambda n: None) -> Summary:
        """Deliver the rows; ``advance(n)`` is called as rows are read (for a progress bar)."""
        assert self._sink is not None and self._conn is not None and self.since is not None
        started = time.monotonic()
        summary = Summary(self.since.isoformat(), self.until.isoformat() if self.until else None)
        dedup = DedupWindow(capacity=self._dedup_window, max_age=self._dedup_max_age)
        if self._dedup_window > 0:
            dedup.remember(self._sink.recent_unique_ids(self._dedup_window, self._dedup_max_age), time.monotonic())
        n_columns = len(REQUIRED_COLUMNS)
        query = sql.SQL("COPY (SELECT {}, created_at FROM {} WHERE {} ORDER BY id) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in REQUIRED_COLUMNS), self._table(), self._where(),
        )

        def rows() -> Iterator[tuple[tuple[bytes | None, ...], datetime]]:
            assert self._conn is not None
            with self._conn.cursor().copy(query) as copy:
                for row in copy.rows():
                    yield tuple(None if v is None else str(v).encode() for v in row[:n_columns]), \
                        datetime.fromisoformat(str(row[n_columns]))

        try:
            delivered = deliver(self.s, self._sink, rows(), dedup=dedup, batch_rows=self._batch_rows, log=self.log,
                                advance=advance)
        finally:
            self._conn.rollback()
        summary.rows_read = delivered.rows_read
        summary.events_stored = delivered.events_stored
        summary.dead_letters_stored = delivered.dead_letters_stored
        summary.duplicates = delivered.duplicates
        summary.seconds = round(time.monotonic() - started, 3)
        return summary


@dataclass(frozen=True, slots=True)
class Delivered:
    rows_read: int
    events_stored: int
    dead_letters_stored: int
    duplicates: int


def deliver(
    settings: Settings, sink: ClickHouseSink, rows: Iterable[tuple[tuple[bytes | None, ...], datetime]], *,
    dedup: DedupWindow, batch_rows: int, log: Any, advance: Callable[[int], None] = lambda n: None,
) -> Delivered:
    """Push outbox rows (REQUIRED_COLUMNS as text bytes, and created_at) through the pipeline's path, each at its
    backfill position (see positions), and wait until they are stored. Used by backfill and ``cdc verify --repair``."""
    s = settings
    tracker = AckTracker(0)
    builder = BatchBuilder(max_rows=batch_rows, max_bytes=s.batch_bytes, max_age=3600.0)
    collector = Collector(
        outbox=(s.outbox_schema, s.outbox_table), builder=builder, tracker=tracker, dedup=dedup,
        high_water_mark=None, bounds=sink.timestamp_bounds(), max_payload_bytes=s.max_payload_bytes, log=log,
        on_full=lambda: hand_off(),
    )
    from ..flusher import Flusher

    flusher = Flusher(sink, tracker, Backoff(s.retry_initial, s.retry_max), log)
    relation = Relation(
        xid=None, relation_id=0, namespace=s.outbox_schema, name=s.outbox_table, replica_identity=ord("d"),
        columns=tuple(Column(0, name, 0, -1) for name in REQUIRED_COLUMNS),
    )

    def hand_off() -> None:
        batch = builder.seal()
        if len(batch):
            flusher.submit(batch, while_waiting=lambda: None, interval=1.0)

    read = unreported = 0
    try:
        for values, created in rows:
            lsn, seq = positions.backfill_position(int(values[0] or b"-1"))
            # Every row has a position of its own (see positions), so one row per call.
            collector.rows(relation, (values,), lsn, seq, (created - _PG_EPOCH) // _MICRO)
            read += 1
            unreported += 1
            if unreported >= _PROGRESS_EVERY:
                advance(unreported)
                unreported = 0
        advance(unreported)
        hand_off()
        flusher.wait_idle(while_waiting=lambda: None, interval=1.0)
    finally:
        flusher.abort()
        flusher.close()
    return Delivered(read, flusher.rows_stored, flusher.dead_letters_stored, collector.counters.duplicates)


def _timestamp(conn: Conn, flag: str, text: str) -> datetime:
    """``text`` as PostgreSQL reads a timestamptz (session time zone UTC), or a one-line refusal."""
    try:
        value = conn.execute("SELECT %s::timestamptz", (text,)).fetchone()[0]  # type: ignore[index]
    except psycopg.Error as exc:
        raise AdminError(f"{flag} {text!r} is not a timestamp ({describe(exc)}): write it like 2026-11-24 or "
                         "'2026-11-24 13:00:00+00'") from None
    if not isinstance(value, datetime):
        raise AdminError(f"{flag} {text!r} is not a finite timestamp")
    return value

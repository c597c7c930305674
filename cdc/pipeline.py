"""A run, put together: slot -> decoder -> transactions -> collector -> buffer -> flusher -> acknowledgement.

``Pipeline.run`` checks the preconditions, reads where ClickHouse stands, builds
the parts, and hands them to the ``Reader`` (the loop, on this thread) and the
``Flusher`` (the inserts, on their own thread).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from structlog.typing import FilteringBoundLogger

from .backoff import Backoff
from .buffer import BatchBuilder
from .collector import Collector, Counters, Dedup
from .failpoints import Failpoints
from .flusher import Flusher
from .lsn import format_lsn, parse_lsn
from .metrics import PipelineMetrics, Sources
from .metrics.monitor import SlotMonitor
from .reader import SNAPSHOT_LSN, PipelineError, Reader
from .replication import preflight
from .retain import Retention
from .settings import Settings
from .sink.base import Sink
from .spill import SpillBudget
from .tracker import AckTracker
from .transactions import TransactionAssembler

__all__ = ["Pipeline", "PipelineError", "RunSummary"]


@dataclass(frozen=True, slots=True)
class RunSummary:
    acknowledged_lsn: int
    counters: Counters
    rows_stored: int
    dead_letters_stored: int


class Pipeline:
    def __init__(
        self, settings: Settings, sink: Sink, dedup: Dedup, log: FilteringBoundLogger, stop: threading.Event,
        *, failpoints: Failpoints | None = None, metrics: PipelineMetrics | None = None,
    ) -> None:
        self.settings = settings
        # Always kept (nothing of it runs per row); served only with --metrics-addr.
        self.metrics = metrics or PipelineMetrics(
            slot=settings.slot, publication=settings.publication,
            sink=urlsplit(settings.clickhouse_url).scheme or "clickhouse",
        )
        self._failpoints = failpoints
        self._sink = sink
        self._dedup = dedup
        self._log = log
        self._stop = stop
        self._backoff = Backoff(settings.retry_initial, settings.retry_max)
        self._flusher: Flusher | None = None

    def abort(self) -> None:
        """Give up on unstored batches (second signal): the run ends without acknowledging them."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.abort()

    def run(
        self, *, until: str | None = None, create_slot: bool = False, from_lsn: int | None = None,
        retention: Retention | None = None,
    ) -> RunSummary:
        """Stream until stopped (or ``until``); ``from_lsn`` replays what the slot still holds after it."""
        s = self.settings
        with preflight.connect(s.pg_dsn) as conn:
            preflight.check_server(conn)
            preflight.check_outbox(conn, s.outbox_schema, s.outbox_table)
            preflight.check_publication(conn, s.publication, s.outbox_schema, s.outbox_table)
            info = preflight.slot_info(conn, s.slot)
            if info is not None:
                preflight.check_slot(conn, info)
                if from_lsn is not None:
                    _check_replayable(info, from_lsn)
            elif from_lsn is not None:
                raise preflight.PreflightError(f"replication slot {s.slot} does not exist: there is nothing to replay")
            elif not create_slot:
                raise preflight.PreflightError(
                    f"replication slot {s.slot} does not exist: run `cdc migrate`, or `cdc run --create-slot`"
                )
            until_lsn = self._resolve_until(conn, until)
        hwm = self._sink.high_water_mark()
        if hwm is not None and hwm[0] == SNAPSHOT_LSN:
            # Snapshot rows are the newest stored and no completion mark follows them.
            if not create_slot:
                raise PipelineError(
                    "the first copy of the outbox into ClickHouse was interrupted: run `cdc run --create-slot` "
                    "to copy it again from a new slot (rows already copied are deduplicated)"
                )
            self._log.warning("the first copy was interrupted: recreating the slot and copying again", slot=s.slot)
            with preflight.connect(s.pg_dsn) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (s.slot,))
            info = None
        self._dedup_remember()
        metrics = self.metrics
        tracker = AckTracker(0 if info is None else info.confirmed_flush_lsn or 0, on_stored=metrics.heartbeat.stored)
        builder = BatchBuilder(max_rows=s.batch_rows, max_bytes=s.batch_bytes, max_age=s.flush_interval)
        if from_lsn is not None:
            # Deliver again what is already stored: deduplication and the
            # ReplacingMergeTree keep it from counting twice.
            hwm = None
            self._log.info("replaying", from_lsn=format_lsn(from_lsn))
        collector = Collector(
            outbox=(s.outbox_schema, s.outbox_table), builder=builder, tracker=tracker, dedup=self._dedup,
            high_water_mark=hwm, bounds=self._sink.timestamp_bounds(), max_payload_bytes=s.max_payload_bytes,
            log=self._log, failpoints=self._failpoints,
            # A full batch goes to the flusher at once, even in the middle of a run of rows.
            on_full=lambda: reader.hand_off(), on_message=metrics.heartbeat.on_message,
        )
        assembler = TransactionAssembler(collector, SpillBudget(s.spill_bytes), self._log)
        flusher = self._flusher = Flusher(
            self._sink, tracker, self._backoff, self._log, self._failpoints,
            keep_progress_seconds=max(s.dedup_max_age, 3600.0) + 3600.0, observer=metrics,
        )
        reader = Reader(
            settings=s, sink=self._sink, backoff=self._backoff, stop=self._stop, log=self._log, tracker=tracker,
            builder=builder, collector=collector, assembler=assembler, flusher=flusher, until_lsn=until_lsn,
            retention=retention or Retention(),
            start_lsn="0/0" if from_lsn is None else format_lsn(from_lsn), on_ack=metrics.acknowledged,
        )
        counters = collector.counters
        metrics.attach(Sources(
            events=lambda: {"stored": flusher.rows_stored, "duplicate": counters.duplicates,
                            "dead_letter": flusher.dead_letters_stored, "already_stored": counters.already_stored},
            buffer_rows=lambda: max(0, counters.rows_buffered + counters.dead_letters
                                    - flusher.rows_stored - flusher.dead_letters_stored),
            dedup_ids=lambda: len(self._dedup),
        ))
        monitor = SlotMonitor(
            connect=lambda: preflight.connect(s.pg_dsn), slot=s.slot, metrics=metrics, log=self._log,
            status_interval=s.status_interval, heartbeat_interval=s.heartbeat_interval,
        )
        try:
            if info is None:
                reader.create_slot_and_copy()
            monitor.start()  # the slot exists now
            reader.stream_forever()
            reader.finish()
        finally:
            monitor.close()
            flusher.close()
        return RunSummary(tracker.safe_lsn, collector.counters, flusher.rows_stored, flusher.dead_letters_stored)

    def _resolve_until(self, conn: psycopg.Connection[tuple[object, ...]], until: str | None) -> int | None:
        if until is None:
            return None
        if until == "current":
            return preflight.current_wal_lsn(conn)
        return parse_lsn(until)

    def _dedup_remember(self) -> None:
        s = self.settings
        if s.dedup_window <= 0:
            return
        ids = self._sink.recent_unique_ids(s.dedup_window, s.dedup_max_age)
        self._dedup.remember(ids, time.monotonic())
        self._log.info("dedup window rebuilt", ids=len(ids))


def _check_replayable(info: preflight.SlotInfo, from_lsn: int) -> None:
    oldest = info.confirmed_flush_lsn or 0
    if from_lsn < oldest:
        raise preflight.PreflightError(
            f"cannot replay from {format_lsn(from_lsn)}: slot {info.name} can give nothing older than "
            f"{format_lsn(oldest)} (its confirmed position); replay from there, use `cdc backfill --since` "
            "for older events, and keep a replay window next time with `cdc run --retain`"
        )

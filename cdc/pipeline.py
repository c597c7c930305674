"""The run loop: slot -> decoder -> transactions -> collector -> buffer -> flusher -> acknowledgement.

The reader (this thread) reads many messages per wake-up, decodes them and
fills the open batch; the flusher thread writes sealed batches. The reader sends
the server only what the tracker says is stored.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Final

import structlog

from .backoff import Backoff
from .buffer import BatchBuilder
from .collector import Collector, Counters, Dedup
from .failpoints import Failpoints
from .flusher import Flusher
from .lsn import format_lsn
from .outbox import REQUIRED_COLUMNS
from .pgoutput import decode
from .pgoutput.messages import Column, Relation
from .replication import preflight, snapshot
from .replication.connection import ReplicationConnection, ReplicationError, StreamEnded
from .retain import Retention
from .replication.protocol import XLOGDATA_HEADER_SIZE, Keepalive, parse_copy_data
from .settings import Settings
from .sink.base import Sink
from .spill import SpillBudget
from .tracker import AckTracker
from .transactions import TransactionAssembler

_MAX_MESSAGES_PER_READ: Final = 4096
_XLOGDATA: Final = ord("w")
_XLOGDATA_HEADER: Final = XLOGDATA_HEADER_SIZE
# Rows copied from an exported snapshot sort before everything the slot streams.
_SNAPSHOT_LSN: Final = 0


class PipelineError(Exception):
    """The pipeline cannot go on; nothing unstored was acknowledged."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    acknowledged_lsn: int
    counters: Counters
    rows_stored: int
    dead_letters_stored: int


class Pipeline:
    def __init__(
        self, settings: Settings, sink: Sink, dedup: Dedup, log: structlog.stdlib.BoundLogger, stop: threading.Event,
        *, failpoints: Failpoints | None = None,
    ) -> None:
        self.settings = settings
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
        if hwm is not None and hwm[0] == _SNAPSHOT_LSN:
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
        tracker = AckTracker(0 if info is None else info.confirmed_flush_lsn or 0)
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
        )
        assembler = TransactionAssembler(collector, SpillBudget(s.spill_bytes), self._log)
        flusher = self._flusher = Flusher(
            self._sink, tracker, self._backoff, self._log, self._failpoints,
            keep_progress_seconds=max(s.dedup_max_age, 3600.0) + 3600.0,
        )
        session = _Session(self, tracker, builder, collector, assembler, flusher, until_lsn, retention or Retention())
        if from_lsn is not None:
            session.start_lsn = format_lsn(from_lsn)
        try:
            if info is None:
                session.create_slot_and_copy()
            session.stream_forever()
            session.finish()
        finally:
            flusher.close()
        return RunSummary(tracker.safe_lsn, collector.counters, flusher.rows_stored, flusher.dead_letters_stored)

    def _resolve_until(self, conn: preflight.psycopg.Connection[tuple[object, ...]], until: str | None) -> int | None:
        if until is None:
            return None
        if until == "current":
            return preflight.current_wal_lsn(conn)
        from .lsn import parse_lsn

        return parse_lsn(until)

    def _dedup_remember(self) -> None:
        s = self.settings
        if s.dedup_window <= 0:
            return
        ids = self._sink.recent_unique_ids(s.dedup_window, s.dedup_max_age)
        remember = getattr(self._dedup, "remember", None)
        if remember is not None:
            remember(ids, time.monotonic())
        self._log.info("dedup window rebuilt", ids=len(ids))


class _Session:
    """State of one run: what the reader loop touches, in one place."""

    def __init__(
        self, pipeline: Pipeline, tracker: AckTracker, builder: BatchBuilder, collector: Collector,
        assembler: TransactionAssembler, flusher: Flusher, until_lsn: int | None, retention: Retention,
    ) -> None:
        self.p = pipeline
        self.s = pipeline.settings
        self.log = pipeline._log
        self.tracker = tracker
        self.builder = builder
        self.collector = collector
        self.assembler = assembler
        self.flusher = flusher
        self.until_lsn = until_lsn
        self.retention = retention
        self.start_lsn = "0/0"  # the slot's confirmed position, unless replaying
        self.repl: ReplicationConnection | None = None
        self.sent_lsn = -1
        self.last_status = 0.0
        self.last_ping = 0.0
        self.reconnecting = False

    # -- slot creation -------------------------------------------------------------------------

    def create_slot_and_copy(self) -> None:
        s = self.s
        repl = ReplicationConnection.connect(s.pg_dsn, application_name="cdc-create-slot")
        try:
            new = snapshot.create_slot(repl, s.slot, export_snapshot=True)
            self.log.info("slot created", slot=s.slot, consistent_point=format_lsn(new.consistent_point))
            self.tracker.advance_idle(new.consistent_point)
            copied = 0
            if new.snapshot_name is not None:
                copied = self._copy_snapshot(new.snapshot_name)
            if copied:
                # Without this mark a copy cut short would look finished; see Pipeline.run.
                self.p._sink.mark_position(new.consistent_point - 1, 0)
            self.collector.high_water_mark = self.p._sink.high_water_mark()
            self.log.info("snapshot delivered", rows=copied)
        finally:
            repl.close()

    def _copy_snapshot(self, snapshot_name: str) -> int:
        s = self.s
        relation = Relation(
            xid=None, relation_id=0, namespace=s.outbox_schema, name=s.outbox_table, replica_identity=ord("d"),
            columns=tuple(Column(0, name, 0, -1) for name in REQUIRED_COLUMNS),
        )
        commit_time = int((time.time() - 946_684_800) * 1_000_000)
        copied = 0
        # Rows already in ClickHouse (an older slot's, an interrupted copy's) are
        # recognised by unique_id, not by position: positions of this copy are new.
        self.collector.high_water_mark = None
        with preflight.connect(s.pg_dsn) as conn:
            for seq, values in enumerate(snapshot.outbox_rows(conn, snapshot_name, s.outbox_schema, s.outbox_table)):
                self.collector.row(relation, values, _SNAPSHOT_LSN, seq, commit_time)
                copied += 1
                if self.builder.full():
                    self.hand_off()
        if len(self.builder):
            self.hand_off()
        self.flusher.wait_idle(while_waiting=lambda: None, interval=self.s.status_interval)
        return copied

    # -- streaming -----------------------------------------------------------------------------

    def stream_forever(self) -> None:
        delays = self.p._backoff.delays()
        while not self._stop_now():
            try:
                self._connect()
                delays = self.p._backoff.delays()
                self._stream()
                return
            except (StreamEnded, ReplicationError, preflight.ConnectError) as exc:
                if isinstance(exc, ReplicationError) and not isinstance(exc, StreamEnded) and exc.sqlstate:
                    raise PipelineError(f"the server refused to stream: {exc}") from None
                if self._stop_now():
                    return
                delay = next(delays)
                self.log.warning("replication connection lost, reconnecting", error=str(exc), retry_in=round(delay, 2))
                self.reconnecting = True
                self._resume_after_loss()
                self.p._stop.wait(delay)

    def _stop_now(self) -> bool:
        return self.p._stop.is_set()

    def _connect(self) -> None:
        s = self.s
        with preflight.connect(s.pg_dsn) as conn:
            info = preflight.slot_info(conn, s.slot)
            if info is None:
                raise preflight.PreflightError(f"replication slot {s.slot} disappeared: it was dropped while we ran")
            if info.active_pid is not None and self.reconnecting:
                # Our previous walsender may linger until the server notices it is gone.
                raise ReplicationError(f"slot {s.slot} is still held by process {info.active_pid}")
            preflight.check_slot(conn, info)
        repl = ReplicationConnection.connect(s.pg_dsn)
        options = {"proto_version": str(preflight.protocol_version(repl.server_version)),
                   "publication_names": f'"{s.publication}"'}
        if s.streaming:
            if repl.server_version < 140000:
                raise preflight.PreflightError("streaming needs PostgreSQL 14 or newer: drop --streaming")
            options["streaming"] = "on"
        try:
            repl.start_replication(s.slot, self.start_lsn, options)
        except ReplicationError as exc:
            repl.close()
            if exc.sqlstate == "55006":
                if self.reconnecting:
                    raise ReplicationError(str(exc)) from None  # retried: see above
                raise preflight.PreflightError(
                    f"replication slot {s.slot} is in use by another process: stop it, or use another --slot"
                ) from None
            raise
        self.repl = repl
        self.start_lsn = "0/0"  # a replay happens once; a reconnect resumes from the slot
        self.sent_lsn = -1
        self.log.info("streaming", slot=s.slot, publication=s.publication, protocol=options["proto_version"],
                      from_lsn=format_lsn(self.tracker.safe_lsn))

    def _resume_after_loss(self) -> None:
        """Store what we hold, then start over from the slot: the server re-sends what we did not acknowledge."""
        if self.repl is not None:
            self.repl.close()
            self.repl = None
        if len(self.builder) or self.tracker.pending:
            self.hand_off()
        self.flusher.wait_idle(while_waiting=lambda: None, interval=self.s.status_interval)
        self.assembler.reset()
        self.collector.high_water_mark = self.p._sink.high_water_mark()

    def _stream(self) -> None:
        assert self.repl is not None
        repl, assembler, builder, flusher = self.repl, self.assembler, self.builder, self.flusher
        max_messages = min(_MAX_MESSAGES_PER_READ, self.s.batch_rows)
        while not self._stop_now():
            timeout = builder.seconds_until_due(time.monotonic())
            frames = repl.read(max_messages, 0.5 if timeout is None else min(0.5, timeout))
            for data in frames:
                if data[0] == _XLOGDATA:
                    # The hot path: skip the 25-byte XLogData header, decode the pgoutput message.
                    assembler.feed(decode(data[_XLOGDATA_HEADER:], in_stream=assembler.in_stream))
                    if builder.full():
                        self.hand_off()
                    continue
                frame = parse_copy_data(data)
                if type(frame) is Keepalive:
                    self._keepalive(frame)
            now = time.monotonic()
            if builder.due(now) or (not len(builder) and self.tracker.pending):
                self.hand_off()
            self.send_status()
            if self.until_lsn is not None and self._reached_until(now):
                return

    def _keepalive(self, frame: Keepalive) -> None:
        if not self.assembler.busy and not len(self.builder) and self.flusher.idle:
            self.tracker.advance_idle(frame.wal_end)
        if frame.reply_requested:
            self.send_status(force=True)

    def _reached_until(self, now: float) -> bool:
        assert self.until_lsn is not None and self.repl is not None
        if self.tracker.safe_lsn >= self.until_lsn:
            return True
        if not self.assembler.busy and not len(self.builder) and self.flusher.idle and now - self.last_ping > 0.5:
            # Ask the server where it is: its keepalive answer lets an idle slot catch up.
            self.last_ping = now
            self.repl.send_status(self.retention.held(self.tracker.safe_lsn, now), reply=True)
        return False

    def hand_off(self) -> None:
        batch = self.builder.seal()
        if not len(batch) and self.flusher.idle:
            self.tracker.stored(batch.seq)
            return
        self.flusher.submit(batch, while_waiting=self.send_status_forced, interval=min(1.0, self.s.status_interval))

    def send_status_forced(self) -> None:
        self.send_status(force=True)

    def send_status(self, *, force: bool = False) -> None:
        """Tell the server what is stored: when it changed, every status_interval, or when asked."""
        if self.repl is None:
            return
        now = time.monotonic()
        ack = self.retention.held(self.tracker.safe_lsn, now)
        if force or ack != self.sent_lsn or now - self.last_status >= self.s.status_interval:
            self.repl.send_status(ack)
            self.sent_lsn = ack
            self.last_status = now

    def finish(self) -> None:
        """Flush what is buffered, wait until it is stored, acknowledge, close."""
        if len(self.builder) or self.tracker.pending:
            self.hand_off()
        self.flusher.wait_idle(while_waiting=self._status_if_connected, interval=self.s.status_interval)
        if self.repl is not None:
            try:
                self.repl.send_status(self.retention.held(self.tracker.safe_lsn, time.monotonic()))
            except StreamEnded:
                self.log.warning("could not send the final acknowledgement; the slot resumes from the previous one")
            self.repl.close()
            self.repl = None
        self.log.info("stopped", ack_lsn=format_lsn(self.tracker.safe_lsn), **vars_of(self.collector.counters))

    def _status_if_connected(self) -> None:
        try:
            self.send_status(force=True)
        except StreamEnded:
            self.repl = None


def _check_replayable(info: preflight.SlotInfo, from_lsn: int) -> None:
    oldest = info.confirmed_flush_lsn or 0
    if from_lsn < oldest:
        raise preflight.PreflightError(
            f"cannot replay from {format_lsn(from_lsn)}: slot {info.name} can give nothing older than "
            f"{format_lsn(oldest)} (its confirmed position); replay from there, use `cdc backfill --since` "
            "for older events, and keep a replay window next time with `cdc run --retain`"
        )


def vars_of(counters: Counters) -> dict[str, int]:
    return {name: getattr(counters, name) for name in counters.__slots__}  # type: ignore[attr-defined]

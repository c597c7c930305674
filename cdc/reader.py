"""The reader: one replication session's loop, on the main thread.

It reads many CopyData messages per wake-up, decodes them, feeds the open batch
and hands full batches to the flusher thread; it tells the server only what
the tracker says is stored (held back by the replay window, if any). It also
reconnects after a lost connection, and copies the outbox from a new slot's
exported snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Final

from structlog.typing import FilteringBoundLogger

from .backoff import Backoff
from .buffer import BatchBuilder
from .collector import Collector
from .flusher import Flusher
from .lsn import format_lsn
from .metrics.monitor import MESSAGES_SINCE
from .outbox import REQUIRED_COLUMNS
from .pgoutput import decode
from .pgoutput.messages import Column, Relation
from .replication import preflight, snapshot
from .replication.connection import ReplicationConnection, ReplicationError, StreamEnded
from .replication.protocol import XLOGDATA_HEADER_SIZE, Keepalive, parse_copy_data
from .retain import Retention
from .settings import Settings
from .sink.base import Sink
from .tracker import AckTracker
from .transactions import TransactionAssembler

# A read's frames are decoded as one run: ~100 KB of them stay in the CPU's
# caches between reading and decoding, and measured fastest (in-process,
# 200k frames: 4.1 us/event at 256 frames a read, 4.7 at 512, 6.4 at 1024).
_MAX_MESSAGES_PER_READ: Final = 1024
_MAX_BYTES_PER_READ: Final = 96 << 10
_XLOGDATA: Final = ord("w")
_MESSAGE_TYPE: Final = XLOGDATA_HEADER_SIZE  # where the pgoutput message starts, with its type byte
_INSERT: Final = ord("I")
_COPY_RUN: Final = 4096
# Rows copied from an exported snapshot sort before everything the slot streams.
SNAPSHOT_LSN: Final = 0
_PG_EPOCH_UNIX: Final = 946_684_800


class PipelineError(Exception):
    """The pipeline cannot go on; nothing unstored was acknowledged."""


@dataclass(eq=False)
class Reader:
    settings: Settings
    sink: Sink
    backoff: Backoff
    stop: threading.Event
    log: FilteringBoundLogger
    tracker: AckTracker
    builder: BatchBuilder
    collector: Collector
    assembler: TransactionAssembler
    flusher: Flusher
    until_lsn: int | None
    retention: Retention
    start_lsn: str = "0/0"  # the slot's confirmed position, unless replaying
    on_ack: Callable[[int], None] | None = None  # told each new position sent to the server (metrics)
    repl: ReplicationConnection | None = field(default=None, init=False)
    sent_lsn: int = field(default=-1, init=False)
    last_status: float = field(default=0.0, init=False)
    last_ping: float = field(default=0.0, init=False)
    reconnecting: bool = field(default=False, init=False)

    # -- slot creation -------------------------------------------------------------------------

    def create_slot_and_copy(self) -> None:
        s = self.settings
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
                self.sink.mark_position(new.consistent_point - 1, 0)
            self.collector.high_water_mark = self.sink.high_water_mark()
            self.log.info("snapshot delivered", rows=copied)
        finally:
            repl.close()

    def _copy_snapshot(self, snapshot_name: str) -> int:
        s = self.settings
        relation = Relation(
            xid=None, relation_id=0, namespace=s.outbox_schema, name=s.outbox_table, replica_identity=ord("d"),
            columns=tuple(Column(0, name, 0, -1) for name in REQUIRED_COLUMNS),
        )
        commit_time = int((time.time() - _PG_EPOCH_UNIX) * 1_000_000)
        copied = 0
        # Rows already in ClickHouse (an older slot's, an interrupted copy's) are
        # recognised by unique_id, not by position: positions of this copy are new.
        self.collector.high_water_mark = None
        with preflight.connect(s.pg_dsn) as conn:
            rows = snapshot.outbox_rows(conn, snapshot_name, s.outbox_schema, s.outbox_table)
            while run := list(islice(rows, _COPY_RUN)):
                self.collector.rows(relation, run, SNAPSHOT_LSN, copied, commit_time)
                copied += len(run)
        self._store_all(while_waiting=lambda: None)
        return copied

    # -- streaming -----------------------------------------------------------------------------

    def stream_forever(self) -> None:
        delays = self.backoff.delays()
        while not self._stop_now():
            try:
                self._connect()
                delays = self.backoff.delays()
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
                self.stop.wait(delay)

    def _stop_now(self) -> bool:
        return self.stop.is_set()

    def _connect(self) -> None:
        s = self.settings
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
        if s.heartbeat_interval > 0 and repl.server_version >= MESSAGES_SINCE:
            options["messages"] = "true"  # the heartbeats: logical decoding messages, PostgreSQL 14+
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
        self._store_all(while_waiting=lambda: None)
        self.assembler.reset()
        # Everything buffered is stored now: the server will resend it, skip it.
        # (Known here without asking ClickHouse, which may be down too.)
        stored, known = self.collector.last_position, self.collector.high_water_mark
        if stored is not None and (known is None or stored > known):
            self.collector.high_water_mark = stored

    def _stream(self) -> None:
        assert self.repl is not None
        repl, assembler, builder = self.repl, self.assembler, self.builder
        max_messages = min(_MAX_MESSAGES_PER_READ, self.settings.batch_rows)
        max_bytes = min(_MAX_BYTES_PER_READ, self.settings.batch_bytes)
        while not self._stop_now():
            timeout = builder.seconds_until_due(time.monotonic())
            frames = repl.read(max_messages, 0.5 if timeout is None else min(0.5, timeout), max_bytes)
            inserts: list[memoryview] = []
            in_stream = assembler.in_stream
            for data in frames:
                if data[0] == _XLOGDATA:
                    if not in_stream and len(data) > _MESSAGE_TYPE and data[_MESSAGE_TYPE] == _INSERT:
                        # The hot path: runs of Inserts are decoded and buffered together.
                        inserts.append(data)
                        continue
                    if inserts:
                        assembler.inserts(inserts, XLOGDATA_HEADER_SIZE)
                        inserts = []
                    assembler.feed(decode(data[XLOGDATA_HEADER_SIZE:], in_stream=in_stream))
                    in_stream = assembler.in_stream
                    continue
                if inserts:
                    assembler.inserts(inserts, XLOGDATA_HEADER_SIZE)
                    inserts = []
                frame = parse_copy_data(data)
                if type(frame) is Keepalive:
                    self._keepalive(frame)
            if inserts:
                assembler.inserts(inserts, XLOGDATA_HEADER_SIZE)
            now = time.monotonic()
            if builder.due(now) or (self.tracker.pending and (not len(builder) or self._until_received())):
                self.hand_off()
            self.send_status()
            if self.until_lsn is not None and self._reached_until(now):
                return

    def _until_received(self) -> bool:
        # Everything up to --until-lsn is here: waiting for the flush interval would only add latency.
        return self.until_lsn is not None and self.tracker.last_commit_lsn >= self.until_lsn

    def _nothing_pending(self) -> bool:
        """No open transaction, nothing buffered, nothing being written."""
        return not self.assembler.busy and not len(self.builder) and self.flusher.idle

    def _keepalive(self, frame: Keepalive) -> None:
        if self._nothing_pending():
            self.tracker.advance_idle(frame.wal_end)
        if frame.reply_requested:
            self.send_status(force=True)

    def _reached_until(self, now: float) -> bool:
        assert self.until_lsn is not None and self.repl is not None
        if self.tracker.safe_lsn >= self.until_lsn:
            return True
        if self._nothing_pending() and now - self.last_ping > 0.5:
            # Ask the server where it is: its keepalive answer lets an idle slot catch up.
            self.last_ping = now
            self.repl.send_status(self.retention.held(self.tracker.safe_lsn, now), reply=True)
        return False

    def _store_all(self, *, while_waiting: Callable[[], None]) -> None:
        """Seal what is held (rows, or commits waiting on the open batch) and wait until it is stored."""
        if len(self.builder) or self.tracker.pending:
            self.hand_off()
        self.flusher.wait_idle(while_waiting=while_waiting, interval=self.settings.status_interval)

    def hand_off(self) -> None:
        batch = self.builder.seal()
        if not len(batch) and self.flusher.idle:
            self.tracker.stored(batch.seq)
            return
        self.flusher.submit(batch, while_waiting=self.send_status_forced, interval=min(1.0, self.settings.status_interval))

    def send_status_forced(self) -> None:
        self.send_status(force=True)

    def send_status(self, *, force: bool = False) -> None:
        """Tell the server what is stored: when it changed, every status_interval, or when asked."""
        if self.repl is None:
            return
        now = time.monotonic()
        ack = self.retention.held(self.tracker.safe_lsn, now)
        if force or ack != self.sent_lsn or now - self.last_status >= self.settings.status_interval:
            self.repl.send_status(ack)
            if ack != self.sent_lsn and self.on_ack is not None:
                self.on_ack(ack)
            self.sent_lsn = ack
            self.last_status = now

    def finish(self) -> None:
        """Flush what is buffered, wait until it is stored, acknowledge, close."""
        self._store_all(while_waiting=self._status_if_connected)
        if self.repl is not None:
            try:
                self.repl.send_status(self.retention.held(self.tracker.safe_lsn, time.monotonic()))
            except StreamEnded:
                self.log.warning("could not send the final acknowledgement; the slot resumes from the previous one")
            self.repl.close()
            self.repl = None
        self.log.info("stopped", ack_lsn=format_lsn(self.tracker.safe_lsn), **asdict(self.collector.counters))

    def _status_if_connected(self) -> None:
        try:
            self.send_status(force=True)
        except StreamEnded:
            self.repl = None

"""The stream session: one replication connection's loop, on the main thread.

read -> decode -> hand off -> acknowledge: it reads many CopyData frames per
wake-up, has cdc.pgoutput.framing decode them into the transaction assembler
(and so into the open batch), hands due batches to the flusher, and tells the
server only what the tracker says is stored. A lost connection ends it with
StreamEnded; cdc.pipeline.stream connects again.
"""

from __future__ import annotations

import time
from typing import Final

from ..pg.replication import ReplicationConnection
from ..pgoutput.framing import FrameDecoder, Keepalive
from .parts import Parts

# A read's frames are decoded as one run: ~100 KB of them stay in the CPU's
# caches between reading and decoding, and measured fastest (in-process,
# 200k frames: 4.1 us/event at 256 frames a read, 4.7 at 512, 6.4 at 1024).
_MAX_MESSAGES_PER_READ: Final = 1024
_MAX_BYTES_PER_READ: Final = 96 << 10


class StreamSession:
    def __init__(self, parts: Parts, repl: ReplicationConnection, *, until_lsn: int | None) -> None:
        self._p = parts
        self._repl = repl
        self._until_lsn = until_lsn

    def run(self) -> None:
        """Stream until stopped, or until everything committed up to ``until_lsn`` is stored and acknowledged."""
        p, until_lsn = self._p, self._until_lsn
        repl = self._repl
        read, decode = repl.read, FrameDecoder(p.assembler, self._keepalive).decode
        builder, tracker, hand_off, acknowledge, stop = p.builder, p.tracker, p.handoff.hand_off, p.ack.send, p.stop
        max_messages = min(_MAX_MESSAGES_PER_READ, p.settings.batch_rows)
        max_bytes = min(_MAX_BYTES_PER_READ, p.settings.batch_bytes)
        # Caught up with the server, the loop would wake for every small transaction,
        # and a wake-up (select, libpq, decode, timers, acknowledgement) costs about
        # what a small transaction's rows do. A settle once data arrives gathers
        # several into one wake-up (at 10,000 ev/s: 4 ms 18.8 us/event, 10 ms 16.5,
        # 20 ms 14.3, 50 ms 14.6; 100 ms no less CPU than 20, and p50 ~50 ms later).
        # It delays no flush: a read never settles past the open batch's due time,
        # and a batch its rows open counts its age from their arrival, not from
        # after the settle. A tenth of the flush interval at most.
        settle = min(p.settings.read_settle, p.settings.flush_interval / 10)
        while not stop.is_set():
            timeout = builder.seconds_until_due(time.monotonic())
            frames = read(max_messages, 0.5 if timeout is None else min(0.5, timeout), max_bytes, settle=settle)
            builder.received_at = repl.arrived_at
            decode(frames)
            now = time.monotonic()
            if builder.due(now) or (tracker.pending and (not len(builder) or self._until_received())):
                hand_off()
            acknowledge()
            if until_lsn is not None and self._reached_until(until_lsn, now):
                return

    def _until_received(self) -> bool:
        # Everything up to --until-lsn is here: waiting for the flush interval would only add latency.
        return self._until_lsn is not None and self._p.tracker.last_commit_lsn >= self._until_lsn

    def _nothing_pending(self) -> bool:
        """No open transaction, nothing buffered, nothing being written."""
        p = self._p
        return not p.assembler.busy and not len(p.builder) and p.flusher.idle

    def _keepalive(self, frame: Keepalive) -> None:
        if self._nothing_pending():
            self._p.tracker.advance_idle(frame.wal_end)
        if frame.reply_requested:
            self._p.ack.send(force=True)

    def _reached_until(self, until_lsn: int, now: float) -> bool:
        if self._p.tracker.safe_lsn >= until_lsn:
            return True
        if self._nothing_pending():
            self._p.ack.ping(now)
        return False

"""Heartbeats: a logical decoding message cdc writes now and then, timed until its point is stored.

The monitor writes ``pg_logical_emit_message(true, 'cdc_heartbeat', payload)``
in a transaction of its own; the payload names the slot and the emit time. The
message comes back through the slot inside that transaction (pgoutput's
``messages`` option, PostgreSQL 14+), and the collector records it against
the batch that is open when it arrives. When that batch is stored, everything
committed before the heartbeat is in ClickHouse: the time since it was emitted
is the pipeline's end-to-end latency at that moment, measured even when the
outbox is idle. Emit time and stored time are both read from this host's
clock, so no clock skew between hosts enters it.

Several pipelines may decode the same database (one slot each): each one
observes only the heartbeats that name its own slot.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final

import orjson

from .histogram import LATENCY_BOUNDS, Histogram

PREFIX: Final = "cdc_heartbeat"


def payload(slot: str, emitted_at: float) -> str:
    return orjson.dumps({"slot": slot, "emitted_at_us": round(emitted_at * 1_000_000)}).decode()


def emitted_at(content: bytes, slot: str) -> float | None:
    """The emit time (Unix seconds) of a heartbeat of ``slot``, or None for anything else."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("slot") != slot:
        return None
    micros = data.get("emitted_at_us")
    if type(micros) is not int:
        return None
    return micros / 1_000_000


class HeartbeatLatency:
    """Heartbeats seen (by batch) until their batch is stored, and the latencies observed then."""

    def __init__(self, slot: str) -> None:
        self.slot: Final = slot
        self.histogram: Final = Histogram(LATENCY_BOUNDS)
        self.interval = 0.0  # seconds between heartbeats; 0 while they are off
        # Emit time of the newest heartbeat whose point is stored; until the first,
        # when heartbeats were turned on, so that a pipeline stalled from the
        # start shows a growing age too.
        self.last_stored: float | None = None
        self._pending: deque[tuple[int, float]] = deque()  # (batch seq, emit time)
        self._newest_seen = 0.0
        self._lock = threading.Lock()

    def enable(self, interval: float, now: float | None = None) -> None:
        self.interval = interval
        if self.last_stored is None:
            self.last_stored = time.time() if now is None else now

    def disable(self) -> None:
        self.interval = 0.0

    def on_message(self, batch_seq: int, prefix: str, content: bytes) -> None:
        """A transactional logical decoding message arrived while batch ``batch_seq`` was open (reader thread)."""
        if prefix == PREFIX:
            self.seen(batch_seq, content)

    def seen(self, batch_seq: int, content: bytes) -> None:
        """A heartbeat message arrived while batch ``batch_seq`` was open (reader thread)."""
        at = emitted_at(content, self.slot)
        with self._lock:
            # After a reconnect the server sends again what was not acknowledged:
            # a heartbeat already timed is not timed twice.
            if at is None or at <= self._newest_seen:
                return
            self._newest_seen = at
            self._pending.append((batch_seq, at))

    def stored(self, batch_seq: int, now: float | None = None) -> None:
        """Batch ``batch_seq`` and every batch before it are stored (flusher or reader thread)."""
        with self._lock:
            pending = self._pending
            if not pending or pending[0][0] > batch_seq:
                return
            stored_at = time.time() if now is None else now
            while pending and pending[0][0] <= batch_seq:
                _, at = pending.popleft()
                self.histogram.observe(max(0.0, stored_at - at))
                self.last_stored = at

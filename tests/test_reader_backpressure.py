"""Held back by a failing insert, the reader stops reading but keeps telling the server where it stands.

The outage test (tests/faults/test_fault_clickhouse.py) proves the same against
real servers; this one runs in a second, for every CI run's mutation check.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import structlog

from cdc.core.events import Batch
from cdc.pipeline import build
from cdc.pipeline.parts import Parts
from cdc.settings import Settings
from cdc.sink.base import SinkError

START_LSN = 1000
HELD_BACK_SECONDS = 2.0


class DownSink:
    """ClickHouse down: every insert fails until ``up`` is set."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.stored: list[int] = []

    def write(self, batch: Batch) -> None:
        if not self.up.is_set():
            raise SinkError("ClickHouse at 127.0.0.1:9000: Connection refused")
        self.stored.append(batch.seq)

    def prune_progress(self, keep_seconds: float) -> int:
        return 0

    def timestamp_bounds(self) -> tuple[datetime, datetime]:
        utc = timezone.utc
        return datetime(1970, 1, 1, tzinfo=utc), datetime(2100, 1, 1, tzinfo=utc)


class ServerSide:
    """What the walsender would receive: each standby status update, with when it came."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, int]] = []

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        self.updates.append((time.monotonic(), flushed))

    def close(self) -> None:
        pass


def _pipeline(sink: DownSink) -> Parts:
    """The parts ``cdc run`` wires (``build``), with one row per batch and the tracker at START_LSN."""
    settings = Settings(status_interval=0.2, batch_rows=1, flush_interval=60, retry_initial=0.01, retry_max=0.05,
                        dedup_window=0)
    parts = build(settings, sink, log=structlog.get_logger()).parts  # type: ignore[arg-type]
    parts.tracker.advance_idle(START_LSN)
    return parts


def test_held_back_by_a_failing_insert_the_reader_keeps_the_server_informed_and_acknowledges_nothing() -> None:
    sink = DownSink()
    parts = _pipeline(sink)
    tracker, builder, flusher = parts.tracker, parts.builder, parts.flusher
    server = ServerSide()
    parts.ack.attach(server)  # type: ignore[arg-type]
    handed_off = threading.Event()

    def receive_three_transactions() -> None:
        # One batch is retried, one waits in the queue, the third holds the reader back.
        for n in range(3):
            builder.extend([(f"u{n}".encode(), "t", 0, "e", b"{}", 1, n, 0)], 2000 + 100 * n, 0)
            tracker.commit(2050 + 100 * n, builder.seq)
            parts.handoff.hand_off()
        handed_off.set()

    reading = threading.Thread(target=receive_three_transactions, daemon=True)
    reading.start()
    try:
        assert not handed_off.wait(HELD_BACK_SECONDS), "the reader was not held back while inserts failed"
        held_back = list(server.updates)
        # Not one status update in all that time and the walsender would give up on us.
        assert len(held_back) >= 3, f"{len(held_back)} status updates in {HELD_BACK_SECONDS}s while held back"
        assert {lsn for _, lsn in held_back} == {START_LSN}, "acknowledged while nothing was stored"

        sink.up.set()
        assert handed_off.wait(10), "the reader stayed held back after ClickHouse came back"
        flusher.wait_idle(while_waiting=lambda: None, interval=0.05)
        parts.ack.send()
    finally:
        sink.up.set()
        reading.join(10)
        flusher.close()
    assert sink.stored == [1, 2, 3]
    assert server.updates[-1][1] == 2250

"""Held back by a failing insert, the reader stops reading but keeps telling the server where it stands.

The outage test (tests/faults/test_fault_clickhouse.py) proves the same against
real servers; this one runs in a second, for every CI run's mutation check.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import structlog

from cdc.backoff import Backoff
from cdc.buffer import BatchBuilder
from cdc.collector import Collector
from cdc.dedup import DedupWindow
from cdc.flusher import Flusher
from cdc.reader import Reader
from cdc.retain import Retention
from cdc.settings import Settings
from cdc.sink.base import Batch, SinkError
from cdc.spill import SpillBudget
from cdc.tracker import AckTracker
from cdc.transactions import TransactionAssembler

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


class ServerSide:
    """What the walsender would receive: each standby status update, with when it came."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, int]] = []

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        self.updates.append((time.monotonic(), flushed))


def _reader(sink: DownSink) -> tuple[Reader, AckTracker, BatchBuilder, Flusher]:
    log = structlog.get_logger()
    settings = Settings(pg_dsn="", clickhouse_url="", status_interval=0.2)
    tracker = AckTracker(START_LSN)
    builder = BatchBuilder(max_rows=1, max_bytes=10**9, max_age=60)
    backoff = Backoff(0.01, 0.05)
    flusher = Flusher(sink, tracker, backoff, log)  # type: ignore[arg-type]
    utc = timezone.utc
    collector = Collector(
        outbox=("public", "outbox"), builder=builder, tracker=tracker, dedup=DedupWindow(0), high_water_mark=None,
        bounds=(datetime(1970, 1, 1, tzinfo=utc), datetime(2100, 1, 1, tzinfo=utc)), max_payload_bytes=1000,
        log=log, on_full=lambda: None,
    )
    reader = Reader(
        settings=settings, sink=sink, backoff=backoff, stop=threading.Event(), log=log,  # type: ignore[arg-type]
        tracker=tracker, builder=builder, collector=collector,
        assembler=TransactionAssembler(collector, SpillBudget(1 << 20), log), flusher=flusher, until_lsn=None,
        retention=Retention(),
    )
    return reader, tracker, builder, flusher


def test_held_back_by_a_failing_insert_the_reader_keeps_the_server_informed_and_acknowledges_nothing() -> None:
    sink = DownSink()
    reader, tracker, builder, flusher = _reader(sink)
    server = ServerSide()
    reader.repl = server  # type: ignore[assignment]
    handed_off = threading.Event()

    def receive_three_transactions() -> None:
        # One batch is retried, one waits in the queue, the third holds the reader back.
        for n in range(3):
            builder.extend([(f"u{n}".encode(), "t", 0, "e", b"{}", 1, n, 0)], 2000 + 100 * n, 0)
            tracker.commit(2050 + 100 * n, builder.seq)
            reader.hand_off()
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
        reader.send_status()
    finally:
        sink.up.set()
        reading.join(10)
        flusher.close()
    assert sink.stored == [1, 2, 3]
    assert server.updates[-1][1] == 2250

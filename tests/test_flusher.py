"""The flusher thread's life cycle, with a sink that fails on purpose (no server involved)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

import structlog

from cdc.backoff import Backoff
from cdc.core.events import EVENT_COLUMNS, Batch, DeadLetter
from cdc.core.flusher import Flusher
from cdc.core.tracker import AckTracker
from cdc.sink.base import SinkError


class BrokenSink:
    """Refuses every batch with an error that retrying cannot fix."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def write(self, batch: Batch) -> None:
        self.release.wait(5)
        raise ValueError("a value the column cannot hold")

    def prune_progress(self, keep_seconds: float) -> int:
        return 0


def _batch(seq: int) -> Batch:
    batch = Batch(seq=seq)
    batch.dead_letters.append(DeadLetter(1, 0, datetime(2026, 1, 1), "public.outbox", "x", "{}"))
    return batch


def test_close_returns_when_the_worker_died_with_a_batch_still_queued() -> None:
    sink = BrokenSink()
    tracker = AckTracker(0)
    flusher = Flusher(sink, tracker, Backoff(0.01, 0.01), structlog.get_logger())  # type: ignore[arg-type]
    flusher.submit(_batch(1), while_waiting=lambda: None, interval=0.05)
    flusher.submit(_batch(2), while_waiting=lambda: None, interval=0.05)  # waits in the queue
    sink.release.set()
    closer = threading.Thread(target=flusher.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() blocked on the full queue"
    assert isinstance(flusher.failure, ValueError)
    assert tracker.safe_lsn == 0  # nothing was acknowledged


class FlakySink:
    """Fails the first write of every batch, then stores it."""

    def __init__(self) -> None:
        self.failed: set[int] = set()

    def write(self, batch: Batch) -> None:
        if batch.seq not in self.failed:
            self.failed.add(batch.seq)
            raise SinkError("connection reset")

    def prune_progress(self, keep_seconds: float) -> int:
        return 0


class Observer:
    def __init__(self) -> None:
        self.stored: list[tuple[int, list[int]]] = []
        self.failures = 0

    def batch_stored(self, rows: int, committed_at_us: Sequence[int], seconds: float) -> None:
        assert seconds >= 0
        self.stored.append((rows, list(committed_at_us)))

    def insert_failed(self) -> None:
        self.failures += 1


def test_the_observer_hears_of_each_stored_batch_with_its_commit_times_and_of_each_failed_insert() -> None:
    observer = Observer()
    flusher = Flusher(FlakySink(), AckTracker(0), Backoff(0.01, 0.01), structlog.get_logger(),  # type: ignore[arg-type]
                      observer=observer)
    batch = Batch(seq=1)
    batch.columns[EVENT_COLUMNS.index("committed_at")].extend([7, 7, 9])
    for column in batch.columns:
        column.extend([0] * (3 - len(column)))
    flusher.submit(batch, while_waiting=lambda: None, interval=0.05)
    flusher.wait_idle(while_waiting=lambda: None, interval=0.05)
    flusher.close()
    assert observer.stored == [(3, [7, 7, 9])]
    assert observer.failures == 1

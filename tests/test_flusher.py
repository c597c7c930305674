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


def test_a_batch_waiting_for_a_dead_flusher_gets_its_failure_and_close_returns() -> None:
    sink = BrokenSink()
    tracker = AckTracker(0)
    flusher = Flusher(sink, tracker, Backoff(0.01, 0.01), structlog.get_logger())  # type: ignore[arg-type]
    flusher.submit(_batch(1), while_waiting=lambda: None, interval=0.05)
    raised: list[BaseException] = []

    def second() -> None:
        try:
            flusher.submit(_batch(2), while_waiting=lambda: None, interval=0.05)  # waits for batch 1
        except ValueError as exc:
            raised.append(exc)

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    sink.release.set()
    waiter.join(10)
    assert not waiter.is_alive() and len(raised) == 1, "the waiting batch never heard of the failure"
    closer = threading.Thread(target=flusher.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() blocked"
    assert isinstance(flusher.failure, ValueError)
    assert tracker.safe_lsn == 0  # nothing was acknowledged


class GatedSink:
    """Stores a batch when the test opens the gate; records the order."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.stored: list[int] = []

    def write(self, batch: Batch) -> None:
        self.gate.wait(10)
        self.stored.append(batch.seq)

    def prune_progress(self, keep_seconds: float) -> int:
        return 0


def test_a_batch_is_handed_over_only_once_the_one_before_is_stored_so_two_at_most_are_held() -> None:
    sink = GatedSink()
    flusher = Flusher(sink, AckTracker(0), Backoff(0.01, 0.01), structlog.get_logger())  # type: ignore[arg-type]
    flusher.submit(_batch(1), while_waiting=lambda: None, interval=0.05)
    informed = threading.Event()
    waiter = threading.Thread(
        target=flusher.submit, args=(_batch(2),), kwargs={"while_waiting": informed.set, "interval": 0.05},
        daemon=True)
    waiter.start()
    assert informed.wait(5), "the server was not kept informed while waiting"
    assert waiter.is_alive() and sink.stored == [], "batch 2 was queued behind an unstored batch 1"
    sink.gate.set()
    waiter.join(10)
    flusher.wait_idle(while_waiting=lambda: None, interval=0.05)
    flusher.close()
    assert sink.stored == [1, 2]


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

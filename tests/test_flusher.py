"""The flusher thread's life cycle, with a sink that fails on purpose (no server involved)."""

from __future__ import annotations

import threading
from datetime import datetime

import structlog

from cdc.backoff import Backoff
from cdc.core.events import Batch, DeadLetter
from cdc.core.flusher import Flusher
from cdc.core.tracker import AckTracker


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

"""Writes sealed batches to the sink on its own thread, so an insert never stalls the replication read.

At most one batch waits while another is being written: when both places are
taken, ``submit`` blocks, and the stream session stops reading from the slot
(backpressure) while it keeps the server informed. A failed write is retried
with backoff forever; the batch is never dropped and never acknowledged.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from ..backoff import Backoff
from ..failpoints import Failpoints
from ..lsn import format_lsn
from ..sink.base import Sink, SinkConfigError, SinkError
from .events import EVENT_COLUMNS, Batch
from .tracker import AckTracker

_COMMITTED_AT = EVENT_COLUMNS.index("committed_at")


class FlushAborted(Exception):
    """Stopped on request while a batch was still unstored."""


class BatchObserver(Protocol):
    """Told once per batch, on the flusher's thread (the metrics)."""

    def batch_stored(self, rows: int, committed_at_us: Sequence[int], seconds: float) -> None: ...

    def insert_failed(self) -> None: ...


class Flusher:
    def __init__(
        self, sink: Sink, tracker: AckTracker, backoff: Backoff, log: FilteringBoundLogger,
        failpoints: Failpoints | None = None, *, keep_progress_seconds: float = 7200.0,
        observer: BatchObserver | None = None,
    ) -> None:
        self._sink = sink
        self._observer = observer
        self._keep_progress = keep_progress_seconds
        self._next_prune = 0.0
        self._failpoints = failpoints
        self._tracker = tracker
        self._backoff = backoff
        self._log = log
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._busy = 0  # batches submitted and not yet stored
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self.failure: BaseException | None = None
        self.rows_stored = 0
        self.dead_letters_stored = 0
        self._thread = threading.Thread(target=self._work, name="cdc-flusher", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        return self._busy == 0

    def submit(self, batch: Batch, *, while_waiting: Callable[[], None], interval: float) -> None:
        """Queue a batch; while the queue is full, call ``while_waiting`` every ``interval`` seconds."""
        with self._lock:
            self._busy += 1
        while True:
            self._raise_failure()
            try:
                self._queue.put(batch, timeout=interval)
                return
            except queue.Full:
                while_waiting()

    def wait_idle(self, *, while_waiting: Callable[[], None], interval: float) -> None:
        while not self.idle:
            self._raise_failure()
            time.sleep(min(interval, 0.05))
            while_waiting()
        self._raise_failure()

    def abort(self) -> None:
        """Stop retrying: used on a second SIGINT/SIGTERM. Nothing unstored gets acknowledged."""
        self._abort.set()

    def close(self) -> None:
        # A worker that died (a permanent error, an abort) leaves a batch in the
        # full queue, and nobody takes it: never block on it, or the process
        # would hang instead of exiting with the error.
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(timeout=5)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                self._store(batch)
            except BaseException as exc:  # noqa: BLE001 - the stream session's thread re-raises it
                self.failure = exc
                return
            with self._lock:
                self._busy -= 1

    def _prune_now_and_then(self) -> None:
        # The progress ledger only needs the dedup window and the newest position;
        # pruning here keeps it small and runs on the thread that owns the sink.
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + 600
        try:
            self._sink.prune_progress(self._keep_progress)
        except SinkError as exc:
            self._log.warning("could not prune the progress table, will try again", error=str(exc))

    def _store(self, batch: Batch) -> None:
        if len(batch) == 0:
            self._tracker.stored(batch.seq)
            return
        started = time.monotonic()
        delays = self._backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._failpoints is not None:
                    self._failpoints.hit("before_insert")
                    self._failpoints.hit("during_insert")
                self._sink.write(batch)
                break
            except SinkConfigError:
                raise
            except SinkError as exc:
                if self._observer is not None:
                    self._observer.insert_failed()
                delay = next(delays)
                self._log.warning(
                    "insert failed, will retry", error=str(exc), attempt=attempt, retry_in=round(delay, 2),
                    rows=batch.rows, batch=batch.seq,
                )
                if self._abort.wait(delay):
                    raise FlushAborted(f"stopped with batch {batch.seq} ({batch.rows} rows) unstored") from None
        if self._failpoints is not None:
            self._failpoints.hit("after_insert")
        seconds = time.monotonic() - started
        safe = self._tracker.stored(batch.seq)
        self.rows_stored += batch.rows
        self.dead_letters_stored += len(batch.dead_letters)
        if self._observer is not None:
            self._observer.batch_stored(batch.rows, batch.columns[_COMMITTED_AT], seconds)
        self._prune_now_and_then()
        self._log.info(
            "flushed", rows=batch.rows, dead_letters=len(batch.dead_letters), bytes=batch.nbytes,
            seconds=round(seconds, 3), ack_lsn=format_lsn(safe), batch=batch.seq,
        )

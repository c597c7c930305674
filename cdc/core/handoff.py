"""The one way a batch leaves the buffer: sealed, and queued for the flusher.

The collector hands off a full batch at once, even in the middle of a run of
rows; the stream session hands off one that is due, or whose commits wait on
it. While the flusher's queue is full, ``while_waiting`` keeps the server
informed (backpressure: nothing is read meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable

from .buffer import BatchBuilder
from .flusher import Flusher
from .tracker import AckTracker


def nothing() -> None:
    """A ``while_waiting`` for when there is nobody to keep informed."""


class Handoff:
    def __init__(
        self, builder: BatchBuilder, tracker: AckTracker, flusher: Flusher, *, while_waiting: Callable[[], None],
        status_interval: float,
    ) -> None:
        self._builder = builder
        self._tracker = tracker
        self._flusher = flusher
        self._while_waiting = while_waiting
        self._status_interval = status_interval
        self._submit_interval = min(1.0, status_interval)

    def hand_off(self) -> None:
        """Seal the open batch and queue it; an empty one is stored at once if nothing is ahead of it."""
        batch = self._builder.seal()
        if not len(batch) and self._flusher.idle:
            self._tracker.stored(batch.seq)
            return
        self._flusher.submit(batch, while_waiting=self._while_waiting, interval=self._submit_interval)

    def store_all(self, *, while_waiting: Callable[[], None]) -> None:
        """Seal what is held (rows, or commits waiting on the open batch) and wait until it is stored."""
        if len(self._builder) or self._tracker.pending:
            self.hand_off()
        self._flusher.wait_idle(while_waiting=while_waiting, interval=self._status_interval)

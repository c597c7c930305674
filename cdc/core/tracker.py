"""Which LSN is safe to acknowledge: the end of every transaction whose rows are all stored.

The collector records each commit against the batch that was open when the commit
arrived (every row of that transaction is in that batch or an earlier one). The
flusher reports batches as stored, in order. Only then does the commit's LSN
become safe. Shared by two threads, hence the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class AckTracker:
    def __init__(self, start_lsn: int, *, on_stored: Callable[[int], None] | None = None) -> None:
        self._lock = threading.Lock()
        # Told each batch seq as it is stored (once per batch): heartbeats are timed by it.
        self._on_stored = on_stored
        self._pending: deque[tuple[int, int]] = deque()  # (batch seq, newest commit end LSN in it)
        self._safe = start_lsn
        self._stored_seq = 0

    @property
    def safe_lsn(self) -> int:
        return self._safe

    @property
    def pending(self) -> int:
        """Batches holding commits not yet stored (commits into one batch count once)."""
        return len(self._pending)

    @property
    def last_commit_lsn(self) -> int:
        """End LSN of the newest commit seen, stored or not."""
        pending = self._pending
        return pending[-1][1] if pending else self._safe

    def commit(self, end_lsn: int, batch_seq: int) -> None:
        with self._lock:
            if batch_seq <= self._stored_seq:
                self._safe = max(self._safe, end_lsn)
                return
            pending = self._pending
            if pending and pending[-1][0] == batch_seq:
                # Another commit into the same batch: one entry per batch is all
                # stored() needs, whatever the number of small transactions.
                if end_lsn > pending[-1][1]:
                    pending[-1] = (batch_seq, end_lsn)
            else:
                pending.append((batch_seq, end_lsn))

    def stored(self, batch_seq: int) -> int:
        """Batch ``batch_seq`` and all before it are stored; returns the new safe LSN."""
        with self._lock:
            self._stored_seq = max(self._stored_seq, batch_seq)
            pending = self._pending
            while pending and pending[0][0] <= batch_seq:
                self._safe = max(self._safe, pending.popleft()[1])
            safe = self._safe
        if self._on_stored is not None:
            self._on_stored(batch_seq)
        return safe

    def advance_idle(self, lsn: int) -> None:
        """Nothing of ours is pending: the server's position is safe (keeps WAL from piling up)."""
        with self._lock:
            if not self._pending:
                self._safe = max(self._safe, lsn)

"""Collects converted rows into a columnar Batch and says when it is time to flush."""

from __future__ import annotations

import time
from typing import Any, Final

from .pgoutput.messages import pg_epoch_micros_to_datetime
from .sink.base import Batch, DeadLetter

# Rough per-row overhead in the buffer beyond the payload, for the byte-size trigger.
ROW_OVERHEAD: Final = 160


class BatchBuilder:
    """The open batch. Flush when it holds ``max_rows`` rows, ``max_bytes`` bytes, or is ``max_age`` old."""

    def __init__(self, *, max_rows: int, max_bytes: int, max_age: float, first_seq: int = 1) -> None:
        self.max_rows: Final = max_rows
        self.max_bytes: Final = max_bytes
        self.max_age: Final = max_age
        self.batch = Batch(seq=first_seq)
        self._opened_at: float | None = None
        self._commit_time = -1
        self._committed_at = pg_epoch_micros_to_datetime(0)

    @property
    def seq(self) -> int:
        return self.batch.seq

    def append(self, row: tuple[Any, ...], commit_lsn: int, seq: int, commit_time: int) -> None:
        if self._opened_at is None:
            self._opened_at = time.monotonic()
        if commit_time != self._commit_time:
            # Rows of one transaction share a commit time: convert it once per transaction.
            self._commit_time = commit_time
            self._committed_at = pg_epoch_micros_to_datetime(commit_time)
        c = self.batch.columns
        c[0].append(row[0])
        c[1].append(row[1])
        c[2].append(row[2])
        c[3].append(row[3])
        c[4].append(row[4])
        c[5].append(row[5])
        c[6].append(row[6])
        c[7].append(commit_lsn)
        c[8].append(seq)
        c[9].append(self._committed_at)
        self.batch.nbytes += len(row[4]) + ROW_OVERHEAD

    def dead_letter(self, letter: DeadLetter) -> None:
        if self._opened_at is None:
            self._opened_at = time.monotonic()
        self.batch.dead_letters.append(letter)
        self.batch.nbytes += len(letter.row_json) + ROW_OVERHEAD

    def __len__(self) -> int:
        return len(self.batch)

    def full(self) -> bool:
        batch = self.batch
        return batch.rows >= self.max_rows or batch.nbytes >= self.max_bytes

    def due(self, now: float) -> bool:
        """Full, or holding rows for longer than max_age."""
        if self._opened_at is None:
            return False
        return self.full() or now - self._opened_at >= self.max_age

    def seconds_until_due(self, now: float) -> float | None:
        if self._opened_at is None:
            return None
        return max(0.0, self._opened_at + self.max_age - now)

    def seal(self) -> Batch:
        """Hand over the open batch and open the next one."""
        sealed = self.batch
        self.batch = Batch(seq=sealed.seq + 1)
        self._opened_at = None
        return sealed

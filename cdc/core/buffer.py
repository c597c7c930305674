"""Collects converted rows into a columnar Batch and says when it is time to flush."""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Final

from ..pgoutput.framing import SMALL_TRANSACTION
from ..pgoutput.messages import PG_EPOCH_UNIX_MICROS
from .events import Batch, DeadLetter
from .outbox import EventRow

# Rough per-row overhead in the buffer beyond the payload, for the byte-size trigger.
ROW_OVERHEAD: Final = 160
# Rows that wait as tuples before they are spread into columns: enough for many
# small transactions at once, few enough to stay in the CPU's caches.
_SPREAD: Final = 2048
# A transaction's run at least this long skips the wait: the decoder's bound on the small
# transactions it groups, so the two agree on what counts as small.
_SPREAD_AT_ONCE: Final = SMALL_TRANSACTION
_payload: Final = itemgetter(4)


class BatchBuilder:
    """The open batch. Flush when it holds ``max_rows`` rows, ``max_bytes`` bytes, or is ``max_age`` old.

    Rows of short runs wait as the tuples they came in until ``_SPREAD`` of
    them have come (or the batch is sealed), then go into the batch's columns
    in one transposition: a transaction of five rows then costs a list
    extend, not ten (live traffic is mostly such transactions). A long run
    (a drain's) goes into the columns at once, behind what waits.
    """

    def __init__(self, *, max_rows: int, max_bytes: int, max_age: float, first_seq: int = 1) -> None:
        self.max_rows: Final = max_rows
        self.max_bytes: Final = max_bytes
        self.max_age: Final = max_age
        self.batch = Batch(seq=first_seq)
        self.rows = 0  # event rows in the open batch, in its columns or still waiting
        self._waiting: list[EventRow] = []
        self._commits: list[tuple[int, int, int]] = []  # (rows, commit_lsn, committed_at) of _waiting, in order
        self._opened_at: float | None = None
        # When the rows being added reached cdc (time.monotonic()), if the caller knows: a batch they
        # open is already that old, so the flush interval counts a row's wait from its arrival.
        self.received_at: float | None = None

    @property
    def seq(self) -> int:
        return self.batch.seq

    def extend(self, rows: Sequence[EventRow], commit_lsn: int, commit_time: int) -> None:
        """Rows of the transaction committed at ``commit_lsn`` (``commit_time``: PostgreSQL-epoch microseconds).

        Each row is (unique_id, event_type, occurred_at, environment, payload,
        metadata_version, outbox_id, commit_seq), occurred_at in Unix-epoch microseconds.
        """
        if self._opened_at is None:
            self._open()
        n = len(rows)
        # PostgreSQL counts time from 2000-01-01, the batch from 1970-01-01 (both UTC, in microseconds).
        commit = (n, commit_lsn, commit_time + PG_EPOCH_UNIX_MICROS)
        self.rows += n
        if n >= _SPREAD_AT_ONCE:  # a drain's long run: straight into the columns (after what waits)
            self._spread()
            payload = self._into_columns(rows, (commit,))
            self.batch.nbytes += sum(map(len, payload)) + n * ROW_OVERHEAD
            return
        waiting = self._waiting
        waiting += rows
        self._commits.append(commit)
        self.batch.nbytes += sum(map(len, map(_payload, rows))) + n * ROW_OVERHEAD
        if len(waiting) >= _SPREAD:
            self._spread()

    def extend_many(self, rows: Sequence[EventRow], commits: Sequence[tuple[int, int, int]]) -> None:
        """Rows of several transactions, in commit order; ``commits`` holds each one's (rows,
        commit_lsn, commit_time), in the same order. The same as ``extend`` for each in turn."""
        if self._opened_at is None:
            self._open()
        n = len(rows)
        self.rows += n
        waiting = self._waiting
        waiting += rows
        self._commits += [(k, commit_lsn, commit_time + PG_EPOCH_UNIX_MICROS) for k, commit_lsn, commit_time in commits]
        self.batch.nbytes += sum(map(len, map(_payload, rows))) + n * ROW_OVERHEAD
        if len(waiting) >= _SPREAD:
            self._spread()

    def _spread(self) -> None:
        """Move the waiting rows into the batch's columns."""
        if self._waiting:
            self._into_columns(self._waiting, self._commits)
            self._waiting = []
            self._commits = []

    def _into_columns(self, rows: Sequence[EventRow], commits: Sequence[tuple[int, int, int]]) -> tuple[bytes, ...]:
        """Append rows to the columns in one transposition (in C); returns their payloads."""
        unique_id, event_type, occurred_at, environment, payload, version, outbox_id, seq = zip(*rows)
        c = self.batch.columns
        c[0].extend(unique_id)
        c[1].extend(event_type)
        c[2].extend(occurred_at)
        c[3].extend(environment)
        c[4].extend(payload)
        c[5].extend(version)
        c[6].extend(outbox_id)
        c[8].extend(seq)
        lsns, times = c[7], c[9]
        for n, commit_lsn, committed_at in commits:
            lsns.extend(repeat(commit_lsn, n))
            times.extend(repeat(committed_at, n))
        return payload

    def _open(self) -> None:
        self._opened_at = time.monotonic() if self.received_at is None else self.received_at

    def dead_letter(self, letter: DeadLetter) -> None:
        if self._opened_at is None:
            self._open()
        self.batch.dead_letters.append(letter)
        self.batch.nbytes += len(letter.row_json) + ROW_OVERHEAD

    def __len__(self) -> int:
        return self.rows + len(self.batch.dead_letters)

    def full(self) -> bool:
        return self.rows >= self.max_rows or self.batch.nbytes >= self.max_bytes

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
        self._spread()
        sealed = self.batch
        self.batch = Batch(seq=sealed.seq + 1)
        self.rows = 0
        self._opened_at = None
        return sealed

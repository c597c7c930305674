"""A new slot's first copy, limited to what ClickHouse lacks: after a lost slot, minutes instead of a full resend.

``cdc run --create-slot`` reads the outbox in the snapshot the new slot
exports (exact at its consistent point: everything committed before is in
it, everything after comes from the slot). Rather than copying every row,
the same buckets as ``cdc verify`` find the ids ClickHouse (events or dead
letters) does not hold, and only those rows are read and delivered. When
ClickHouse holds nothing of the outbox at all, the caller copies everything
in one pass in id order, which is cheaper than looking each row up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from ..core.missing import MissingRows, Row
from ..core.reconcile import Missing, StoredScope, chunks, differing, merge
from ..pg.reconcile import OutboxSnapshot
from ..sink.base import StoredIds

_CHUNK_ROWS: Final = 1_000_000



@dataclass(slots=True)
class GapPlan:
    outbox_ids: int = 0
    stored_ids: int = 0
    differing_buckets: int = 0
    whole: bool = False  # ClickHouse holds none of it: copy everything
    missing: int = 0     # rows found missing (known once ``rows()`` is exhausted)


class Gap:
    """Use after ``snapshot.open()`` in the slot's exported snapshot; ``plan`` says what ``rows()`` will yield."""

    def __init__(self, snapshot: OutboxSnapshot, stored: StoredIds, consistent_point: int, *,
                 chunk_rows: int = _CHUNK_ROWS) -> None:
        self._snapshot = snapshot
        self._stored = stored
        self._chunk_rows = chunk_rows
        self.plan = GapPlan()
        self._low = snapshot.low_id(None)
        self._scope = StoredScope(self._low, consistent_point)
        self._diff: list[int] = []
        self._weights: dict[int, int] = {}
        if self._low is None:
            return
        pg = snapshot.sums(self._low)
        ch = stored.sums(self._scope)
        self.plan.outbox_ids = sum(b.count for b in pg.buckets.values())
        self.plan.stored_ids = sum(b.count for b in ch.values())
        if not ch:
            self.plan.whole = True
            return
        self._diff = differing(pg.buckets, ch)
        self.plan.differing_buckets = len(self._diff)
        self._weights = {b: pg.buckets[b].count if b in pg.buckets else 0 for b in self._diff}

    def rows(self) -> Iterator[Row]:
        """The rows ClickHouse lacks, a chunk of buckets at a time (only when ``plan.whole`` is False)."""
        assert not self.plan.whole
        low = self._low
        if low is None:
            return
        for run in chunks(self._diff, self._weights.__getitem__, self._chunk_rows):
            missing = MissingRows()
            for found in merge(self._snapshot.hashes(low, run), self._stored.hashes(self._scope, run)):
                if isinstance(found, Missing):
                    missing.add(found)
            self.plan.missing += missing.count
            yield from missing.fetch(self._snapshot)


def describe(plan: GapPlan) -> dict[str, Any]:
    return {"outbox_ids": plan.outbox_ids, "stored_ids": plan.stored_ids, "differing_buckets": plan.differing_buckets,
            "whole": plan.whole}

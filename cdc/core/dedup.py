"""Deduplication window: remember recent ``unique_id`` values exactly, in bounded memory.

Two events with the same ``unique_id`` inside the window are one event: the first
is admitted, later ones are reported as duplicates.  The window is bounded by
COUNT (the most recent ``capacity`` remembered ids) and by AGE (ids first seen
more than ``max_age`` seconds ago are forgotten); both forget oldest first.

This module is the window's policy and public API.  How ids are held (a FIFO
ring of keyed 128-bit fingerprints found through an open-addressing index, all
allocated up front: under 56 bytes per id at the default load), why the
answers are exact, and why lookups stay fast are in ``cdc._dedup_table``.

Not thread-safe: one window belongs to one consumer loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import islice

from ._dedup_table import MAX_CAPACITY, FingerprintTable, UniqueId

__all__ = ["DedupWindow"]

DEFAULT_CAPACITY = 1_000_000
DEFAULT_MAX_AGE = 3600.0
DEFAULT_MAX_LOAD = 0.25

# Bounds the temporary digest list while rebuilding from a large table.
_REMEMBER_CHUNK = 65536


class DedupWindow(FingerprintTable):
    """Exact, bounded memory of recently seen ``unique_id`` strings.

    An id may be given as ``str`` or as its UTF-8 ``bytes``: either form is
    the same id (the pipeline passes the bytes PostgreSQL sent; the rebuild
    from ClickHouse passes strings).

    ``admit(uid, now)`` returns True the first time ``uid`` is seen inside the
    window (and remembers it) and False for a duplicate.  A duplicate does not
    refresh the id's age: the window runs from the first sighting.

    ``now`` is any clock in seconds the caller chooses (wall or monotonic); it
    is only compared with itself.  If it goes backwards, entries are stamped
    with the latest time seen so far, which keeps the ring ordered and can only
    make ids live longer, never shorter.

    ``capacity=0`` disables deduplication: everything is admitted and nothing
    is allocated.  ``nbytes()`` (the fixed allocation) comes from
    ``FingerprintTable``.
    """

    __slots__ = ("_max_age",)

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_age: float = DEFAULT_MAX_AGE,
        *,
        key: bytes | None = None,
        max_load: float = DEFAULT_MAX_LOAD,
    ) -> None:
        if capacity < 0 or capacity > MAX_CAPACITY:
            raise ValueError(f"capacity must be between 0 and {MAX_CAPACITY}, got {capacity}")
        if math.isnan(max_age) or max_age < 0:
            raise ValueError(f"max_age must be >= 0 seconds (math.inf for no age bound), got {max_age}")
        if not 0 < max_load <= 0.75:
            raise ValueError(f"max_load must be in (0, 0.75], got {max_load}")
        super().__init__(capacity, max_load, key)
        self._max_age = float(max_age)

    # -- introspection -----------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_age(self) -> float:
        return self._max_age

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (
            f"DedupWindow(capacity={self._capacity}, max_age={self._max_age}, "
            f"len={self._count}, nbytes={self.nbytes()})"
        )

    # -- hot path ----------------------------------------------------------

    def admit(self, unique_id: UniqueId, now: float) -> bool:
        """True if ``unique_id`` is new in the window (it is now remembered), False if a duplicate."""
        if not self._capacity:
            return True
        if self._count and self._ts[self._head] < now - self._max_age:
            self.expire(now)
        lo, hi = self._fingerprint(unique_id)
        return self._insert(hi, lo, now)

    def admit_many(self, unique_ids: Sequence[UniqueId], now: float) -> list[bool]:
        """``admit`` for a batch sharing one ``now``; a repeat inside the batch is a duplicate too.

        Same answers as calling ``admit`` on each id in order, only faster
        (hashing and probing run without a method call per id).  An empty id
        raises ValueError before any id of the batch is remembered.
        """
        if not self._capacity:
            return [True] * len(unique_ids)
        if self._count and self._ts[self._head] < now - self._max_age:
            self.expire(now)
        if not unique_ids:
            # It expires like any call, but stamps nothing: the clock must not move.
            return []
        return self._insert_ids(unique_ids, now)

    def contains(self, unique_id: UniqueId, now: float) -> bool:
        """Whether ``unique_id`` is remembered at ``now``, without remembering it."""
        if not self._capacity:
            return False
        self.expire(now)
        lo, hi = self._fingerprint(unique_id)
        return self._find(hi, lo) >= 0

    # -- start-up and maintenance ------------------------------------------

    def remember(
        self,
        unique_ids_oldest_first: Iterable[UniqueId],
        now: float,
        *,
        seen_at: Iterable[float] | None = None,
    ) -> int:
        """Rebuild the window from storage, oldest first; returns how many ids were new.

        Without ``seen_at`` every id is stamped ``now``, which can only keep
        ids longer than their true age, never drop one early.  With
        ``seen_at`` (one time per id, same clock as ``now``) ids keep their
        real age and those already older than ``max_age`` are forgotten at once.
        The count bound applies as usual: only the newest ``capacity`` stay.
        """
        if not self._capacity:
            return 0
        added = 0
        if seen_at is None:
            ids = iter(unique_ids_oldest_first)
            while chunk := list(islice(ids, _REMEMBER_CHUNK)):
                added += sum(self.admit_many(chunk, now))
        else:
            stamps = iter(seen_at)
            for uid in unique_ids_oldest_first:
                stamp = next(stamps, None)
                if stamp is None:
                    raise ValueError("seen_at has fewer entries than unique_ids_oldest_first")
                lo, hi = self._fingerprint(uid)
                added += self._insert(hi, lo, stamp)
            if next(stamps, None) is not None:
                raise ValueError("seen_at has more entries than unique_ids_oldest_first")
        self.expire(now)
        return added

    def expire(self, now: float) -> int:
        """Forget ids first seen more than ``max_age`` seconds before ``now``; returns how many."""
        return self._drop_before(now - self._max_age)

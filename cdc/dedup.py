"""Deduplication window: remember recent ``unique_id`` values exactly, in bounded memory.

Two events with the same ``unique_id`` inside the window are one event: the first
is admitted, later ones are reported as duplicates.  The window is bounded by
COUNT (the most recent ``capacity`` remembered ids) and by AGE (ids first seen
more than ``max_age`` seconds ago are forgotten); both forget oldest first.

Layout (all memory is allocated up front from ``capacity``, so the footprint is
known at start-up and never grows):

* a FIFO ring of ``capacity`` entries, in insertion order: the 128-bit keyed
  BLAKE2b fingerprint of each id as two ``array('Q')`` halves, plus an
  ``array('d')`` of first-seen times.  Expiry pops from its head.
* an open-addressing index (linear probing) of ``array('I')`` slots holding
  ``ring position + 1`` (0 = empty), a power of two >= ``capacity / max_load``
  slots.  Keeping only a 4-byte pointer in the index, rather than the
  fingerprint itself, is what makes a sparse index affordable: the ring already
  has to hold the fingerprint for expiry, so the index never duplicates it.

Memory is 24 bytes per id of ring plus 4 / load of index: with the default
``max_load=0.25`` that is 40.8 bytes per id at 1M and 50.8 at 10M, and under
56 for any capacity (the power of two at most doubles the index).

Deletion uses backward shift, so there are no tombstones and probe chains never
degrade however many ids pass through the window.

Exactness: an id inside the window is always found (no false negatives).  A
false positive needs two distinct ids with equal 128-bit fingerprints, which is
negligible (~n^2 / 2^129).  The hash is keyed with a random per-window key so
that nobody who controls ids can aim them at one probe chain and make lookups
slow.

Not thread-safe: one window belongs to one consumer loop.
"""

from __future__ import annotations

import math
import os
import sys
from array import array
from collections.abc import Iterable, Sequence
from hashlib import blake2b
from itertools import islice
from struct import Struct

__all__ = ["DedupWindow"]

DEFAULT_CAPACITY = 1_000_000
DEFAULT_MAX_AGE = 3600.0
DEFAULT_MAX_LOAD = 0.25

# Ring positions are stored +1 in 32-bit slots; 0 marks an empty slot.
_MAX_CAPACITY = 0xFFFFFFFE
_unpack_lo_hi = Struct("<QQ").unpack

# Bounds the temporary digest list while rebuilding from a large table.
_REMEMBER_CHUNK = 65536


def _index_array(n: int) -> array[int]:
    # 'I' is 4 bytes on every platform CPython supports; fail loudly if not,
    # rather than silently doubling the index.
    a = array("I", [0])
    if a.itemsize != 4:
        raise RuntimeError(f"array('I') has itemsize {a.itemsize}, expected 4")
    return a * n


class DedupWindow:
    """Exact, bounded memory of recently seen ``unique_id`` strings.

    ``admit(uid, now)`` returns True the first time ``uid`` is seen inside the
    window (and remembers it) and False for a duplicate.  A duplicate does not
    refresh the id's age: the window runs from the first sighting.

    ``now`` is any clock in seconds the caller chooses (wall or monotonic); it
    is only compared with itself.  If it goes backwards, entries are stamped
    with the latest time seen so far, which keeps the ring ordered and can only
    make ids live longer, never shorter.

    ``capacity=0`` disables deduplication: everything is admitted and nothing
    is allocated.
    """

    __slots__ = (
        "_capacity", "_max_age", "_mask", "_index", "_hi", "_lo", "_ts",
        "_head", "_count", "_last_ts", "_hasher",
    )  # fmt: skip

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_age: float = DEFAULT_MAX_AGE,
        *,
        key: bytes | None = None,
        max_load: float = DEFAULT_MAX_LOAD,
    ) -> None:
        if capacity < 0 or capacity > _MAX_CAPACITY:
            raise ValueError(f"capacity must be between 0 and {_MAX_CAPACITY}, got {capacity}")
        if math.isnan(max_age) or max_age < 0:
            raise ValueError(f"max_age must be >= 0 seconds (math.inf for no age bound), got {max_age}")
        if not 0 < max_load <= 0.75:
            raise ValueError(f"max_load must be in (0, 0.75], got {max_load}")
        self._capacity = capacity
        self._max_age = float(max_age)
        # Eviction walks to the end of the cluster (backward shift), and in
        # CPython every probe step is bytecode: at load 0.5 a full window
        # admits about a third slower than at 0.25, for 8 bytes/id less.
        slots = 1 << max(1, math.ceil(capacity / max_load - 1).bit_length()) if capacity else 0
        self._mask = slots - 1
        self._index = _index_array(slots)
        self._hi = array("Q", [0]) * capacity
        self._lo = array("Q", [0]) * capacity
        self._ts = array("d", [0.0]) * capacity
        self._head = 0
        self._count = 0
        self._last_ts = -math.inf
        # Copying a hasher primed with the key is as fast as an unkeyed
        # blake2b() call; passing key= on every call costs ~50% more.
        self._hasher = blake2b(digest_size=16, key=key if key is not None else os.urandom(16))

    # -- introspection -----------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_age(self) -> float:
        return self._max_age

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes held by the window's arrays (the fixed, up-front allocation)."""
        return sum(a.buffer_info()[1] * a.itemsize for a in (self._index, self._hi, self._lo, self._ts))

    def __repr__(self) -> str:
        return (
            f"DedupWindow(capacity={self._capacity}, max_age={self._max_age}, "
            f"len={self._count}, nbytes={self.nbytes()})"
        )

    # -- hot path ----------------------------------------------------------

    def admit(self, unique_id: str, now: float) -> bool:
        """True if ``unique_id`` is new in the window (it is now remembered), False if a duplicate."""
        if not self._capacity:
            return True
        if self._count and self._ts[self._head] < now - self._max_age:
            self.expire(now)
        lo, hi = self._fingerprint(unique_id)
        return self._insert(hi, lo, now)

    def admit_many(self, unique_ids: Sequence[str], now: float) -> list[bool]:
        """``admit`` for a batch sharing one ``now``; a repeat inside the batch is a duplicate too.

        Same answers as calling ``admit`` on each id in order, only faster
        (hashing and probing run without a method call per id).  An empty id
        raises ValueError before any id of the batch is remembered.
        """
        if not self._capacity:
            return [True] * len(unique_ids)
        if self._count and self._ts[self._head] < now - self._max_age:
            self.expire(now)
        fps = self._fingerprints(unique_ids)
        if now < self._last_ts:
            now = self._last_ts
        self._last_ts = now

        # _insert() and _delete_slot() inlined over the batch: in CPython the
        # method calls and attribute lookups would cost as much as the work.
        index, hi_a, lo_a, ts_a = self._index, self._hi, self._lo, self._ts
        mask, cap = self._mask, self._capacity
        head, count = self._head, self._count
        out: list[bool] = []
        append = out.append
        it = iter(fps)
        for lo, hi in zip(it, it):
            home = i = hi & mask
            p = index[i]
            while p:
                if hi_a[p - 1] == hi and lo_a[p - 1] == lo:
                    break
                i = (i + 1) & mask
                p = index[i]
            if p:
                append(False)
                continue
            if count == cap:
                target = head + 1
                e = hi_a[head] & mask
                while index[e] != target:
                    e = (e + 1) & mask
                j = e
                while True:
                    j = (j + 1) & mask
                    q = index[j]
                    if not q:
                        break
                    if (hi_a[q - 1] - e - 1) & mask >= (j - e) & mask:
                        index[e] = q
                        e = j
                index[e] = 0
                if (e - home) & mask < (i - home) & mask:
                    i = e
                tail = head
                head = target if target < cap else 0
            else:
                tail = head + count
                if tail >= cap:
                    tail -= cap
                count += 1
            hi_a[tail] = hi
            lo_a[tail] = lo
            ts_a[tail] = now
            index[i] = tail + 1
            append(True)
        self._head, self._count = head, count
        return out

    def contains(self, unique_id: str, now: float) -> bool:
        """Whether ``unique_id`` is remembered at ``now``, without remembering it."""
        if not self._capacity:
            return False
        self.expire(now)
        lo, hi = self._fingerprint(unique_id)
        return self._find(hi, lo) >= 0

    # -- start-up and maintenance ------------------------------------------

    def remember(
        self,
        unique_ids_oldest_first: Iterable[str],
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
        cutoff = now - self._max_age
        ts, cap = self._ts, self._capacity
        head, count = self._head, self._count
        gone = 0
        while count and ts[head] < cutoff:
            self._delete_slot(head)
            head += 1
            if head == cap:
                head = 0
            count -= 1
            gone += 1
        self._head, self._count = head, count
        return gone

    # -- internals ---------------------------------------------------------

    def _fingerprint(self, unique_id: str) -> tuple[int, int]:
        """(lo, hi) halves of the keyed 128-bit fingerprint."""
        if not unique_id:
            raise ValueError("unique_id must be a non-empty string")
        h = self._hasher.copy()
        # surrogatepass: any Python str is accepted, even one no database
        # would hand us, instead of failing on the hot path.
        h.update(unique_id.encode("utf-8", "surrogatepass"))
        return _unpack_lo_hi(h.digest())

    def _fingerprints(self, unique_ids: Sequence[str]) -> array[int]:
        """Fingerprints of a batch as one flat array: lo0, hi0, lo1, hi1, ..."""
        if not all(unique_ids):
            raise ValueError("unique_id must be a non-empty string")
        copy = self._hasher.copy
        digests: list[bytes] = []
        append = digests.append
        try:
            for uid in unique_ids:
                h = copy()
                h.update(uid.encode())
                append(h.digest())
        except UnicodeEncodeError:
            # Rare (lone surrogates): redo the batch the slower, total way
            # so the common path skips the error-handler argument.
            digests.clear()
            for uid in unique_ids:
                h = copy()
                h.update(uid.encode("utf-8", "surrogatepass"))
                append(h.digest())
        # One frombytes over the joined digests replaces 2n int conversions.
        flat = array("Q")
        flat.frombytes(b"".join(digests))
        if sys.byteorder != "little":
            flat.byteswap()
        return flat

    def _insert(self, hi: int, lo: int, now: float) -> bool:
        """Remember one fingerprint unless present (the caller has already expired by age)."""
        if now < self._last_ts:
            now = self._last_ts
        self._last_ts = now
        index, hi_a, lo_a, mask = self._index, self._hi, self._lo, self._mask
        home = i = hi & mask
        p = index[i]
        while p:
            if hi_a[p - 1] == hi and lo_a[p - 1] == lo:
                return False
            i = (i + 1) & mask
            p = index[i]
        cap, head = self._capacity, self._head
        if self._count == cap:
            # Count bound: forget the oldest.  Evicting only after the lookup
            # means the oldest id is still caught if it is the one arriving.
            hole = self._delete_slot(head)
            # Deletion empties exactly one slot, so the first free slot from
            # home is now either the hole or the one the lookup ended on.
            if (hole - home) & mask < (i - home) & mask:
                i = hole
            tail = head
            self._head = head + 1 if head + 1 < cap else 0
        else:
            tail = head + self._count
            if tail >= cap:
                tail -= cap
            self._count += 1
        hi_a[tail] = hi
        lo_a[tail] = lo
        self._ts[tail] = now
        index[i] = tail + 1
        return True

    def _find(self, hi: int, lo: int) -> int:
        """Ring position of a fingerprint, or -1."""
        index, hi_a, lo_a, mask = self._index, self._hi, self._lo, self._mask
        i = hi & mask
        p = index[i]
        while p:
            if hi_a[p - 1] == hi and lo_a[p - 1] == lo:
                return p - 1
            i = (i + 1) & mask
            p = index[i]
        return -1

    def _delete_slot(self, pos: int) -> int:
        """Remove ring position ``pos`` from the index by backward-shift deletion; returns the emptied slot."""
        index, hi_a, mask = self._index, self._hi, self._mask
        target = pos + 1
        i = hi_a[pos] & mask
        while index[i] != target:
            i = (i + 1) & mask
        # Pull later members of the cluster back into the hole unless that
        # would move them before their home slot; then no tombstone is needed.
        j = i
        while True:
            j = (j + 1) & mask
            q = index[j]
            if not q:
                break
            home = hi_a[q - 1] & mask
            # Entry at j may move to hole i iff home is not cyclically in (i, j].
            if (home - i - 1) & mask >= (j - i) & mask:
                index[i] = q
                i = j
        index[i] = 0
        return i


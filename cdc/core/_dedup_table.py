"""The mechanics under ``cdc.dedup.DedupWindow``: keyed fingerprints in a bounded hash table.

Layout (all memory is allocated up front from ``capacity``, so the footprint is
known at start-up and never grows):

* a FIFO ring of ``capacity`` entries, in insertion order: the 128-bit keyed
  fingerprint of each id as two ``array('Q')`` halves, plus an
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
negligible (~n^2 / 2^129).  The fingerprint is two 64-bit SipHash values of the
id's UTF-8 bytes, one of them salted with a random per-window key: Python's own
``hash`` of bytes, which is SipHash keyed with the interpreter's random secret
(PEP 456), computed in C at a third of the cost of a keyed BLAKE2b digest.  So
nobody who controls ids can aim them at one probe chain and make lookups slow,
unless PYTHONHASHSEED pins the secret.

The batch insert (fingerprints, probe, insert, eviction) also exists compiled,
``cdc._accel.insert_ids`` (cdc/_accel_dedup.c), the same recipe and loop on the
same arrays; ``_insert_ids`` uses it when ``cdc.accel`` picked the accelerator,
for a list of bytes or ASCII ids, and this module's code otherwise.

``DedupWindow`` subclasses ``FingerprintTable`` rather than holding one: its
hot path then reaches the arrays and methods through ``self`` with no extra
attribute hop, and (as the tests rely on) a subclass can still override
``_fingerprint`` / ``_fingerprints``.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Sequence

from .. import accel

# Ring positions are stored +1 in 32-bit slots; 0 marks an empty slot.
MAX_CAPACITY = 0xFFFFFFFE
_U64 = 0xFFFFFFFFFFFFFFFF

UniqueId = str | bytes  # bytes: the id's UTF-8 encoding, the same id as its str


def _index_array(n: int) -> array[int]:
    # 'I' is 4 bytes on every platform CPython supports; fail loudly if not,
    # rather than silently doubling the index.
    a = array("I", [0])
    if a.itemsize != 4:
        raise RuntimeError(f"array('I') has itemsize {a.itemsize}, expected 4")
    return a * n


def _unlink(index: array[int], hi_a: array[int], mask: int, pos: int) -> int:
    """Remove ring position ``pos`` from the index by backward-shift deletion; returns the slot left empty.

    The one deletion of the table (eviction by count, expiry by age). A plain
    function of the arrays: the callers hold them in locals already, and a
    method would look each up again on every call of the hot path.
    """
    target = pos + 1
    i = hi_a[pos] & mask
    while index[i] != target:
        i = (i + 1) & mask
    # Pull later members of the cluster back into the hole unless that would
    # move them before their home slot; then no tombstone is needed. The entry
    # at j may move to hole i iff its home (hi & mask) is not cyclically in (i, j].
    j = i
    while True:
        j = (j + 1) & mask
        q = index[j]
        if not q:
            break
        if (hi_a[q - 1] - i - 1) & mask >= (j - i) & mask:
            index[i] = q
            i = j
    index[i] = 0
    return i


class FingerprintTable:
    """The ring of up to ``capacity`` fingerprints, oldest at ``_head``, and the index that finds them.

    It knows nothing of the window's age bound: it fingerprints ids, finds and
    inserts fingerprints (forgetting the oldest when full), and forgets the
    oldest ones stamped before a cutoff.  Stamps in the ring never decrease:
    an insert stamped earlier than the latest stamp so far gets the latest,
    which is what lets expiry pop from the head.  The caller validates
    ``capacity`` (at most ``MAX_CAPACITY``) and ``max_load`` (in (0, 0.75]).
    """

    __slots__ = (
        "_capacity",
        "_count",
        "_head",
        "_hi",
        "_index",
        "_last_ts",
        "_lo",
        "_mask",
        "_native",
        "_salt",
        "_ts",
    )  # fmt: skip

    def __init__(self, capacity: int, max_load: float, key: bytes | None) -> None:
        self._capacity = capacity
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
        self._salt = key if key is not None else os.urandom(16)
        # The compiled insert (cdc._accel.insert_ids) when cdc.accel picked it,
        # unless a subclass fingerprints or inserts its own way.
        cls = type(self)
        standard = (cls._fingerprints is FingerprintTable._fingerprints
                    and cls._insert_many is FingerprintTable._insert_many and type(self._salt) is bytes)
        self._native = accel.native if standard else None

    def nbytes(self) -> int:
        """Bytes held by the window's arrays (the fixed, up-front allocation)."""
        return sum(a.buffer_info()[1] * a.itemsize for a in (self._index, self._hi, self._lo, self._ts))

    # -- fingerprints ------------------------------------------------------

    def _fingerprint(self, unique_id: UniqueId) -> tuple[int, int]:
        """(lo, hi) halves of the keyed 128-bit fingerprint."""
        (lo,), (hi,) = self._fingerprints((unique_id,))
        return lo, hi

    def _fingerprints(self, unique_ids: Sequence[UniqueId]) -> tuple[list[int], list[int]]:
        """Fingerprints of a batch: the lo halves and the hi halves."""
        if not all(unique_ids):
            raise ValueError("unique_id must be a non-empty string")
        salt = self._salt
        try:
            return [hash(uid + salt) & _U64 for uid in unique_ids], [hash(uid) & _U64 for uid in unique_ids]  # type: ignore[operator]
        except TypeError:  # str ids, or a mix: their UTF-8 bytes, so that either form is the same id
            # surrogatepass: any Python str is accepted, even one no database
            # would hand us, instead of failing on the hot path.
            data = [uid.encode("utf-8", "surrogatepass") if type(uid) is str else uid for uid in unique_ids]
            return [hash(d + salt) & _U64 for d in data], [hash(d) & _U64 for d in data]  # type: ignore[operator]

    # -- the table ---------------------------------------------------------

    def _insert_ids(self, unique_ids: Sequence[UniqueId], now: float) -> list[bool]:
        """``_insert_many(self._fingerprints(unique_ids), now)``: compiled for a list of bytes or ASCII ids."""
        native = self._native
        if native is not None and type(unique_ids) is list:
            if now < self._last_ts:
                now = self._last_ts
            done: tuple[list[bool], int, int] | None = native.insert_ids(
                unique_ids, self._salt, now, self._index, self._hi, self._lo, self._ts, self._mask, self._capacity,
                self._head, self._count,
            )
            if done is not None:  # None: an id it does not take, and nothing changed
                self._last_ts = now
                admitted, self._head, self._count = done
                return admitted
        return self._insert_many(self._fingerprints(unique_ids), now)

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
            hole = _unlink(index, hi_a, mask, head)
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

    def _insert_many(self, fps: tuple[list[int], list[int]], now: float) -> list[bool]:
        """``_insert`` for each (lo, hi) pair of ``fps`` in order, all stamped ``now``."""
        if now < self._last_ts:
            now = self._last_ts
        self._last_ts = now

        # _insert() inlined over the batch: in CPython the method calls and
        # attribute lookups would cost as much as the work.
        index, hi_a, lo_a, ts_a = self._index, self._hi, self._lo, self._ts
        mask, cap = self._mask, self._capacity
        head, count = self._head, self._count
        unlink = _unlink
        out: list[bool] = []
        append = out.append
        for lo, hi in zip(*fps):
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
                # As in _insert: forget the oldest, then take the hole if it comes first.
                e = unlink(index, hi_a, mask, head)
                if (e - home) & mask < (i - home) & mask:
                    i = e
                tail = head
                head = head + 1 if head + 1 < cap else 0
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

    def _drop_before(self, cutoff: float) -> int:
        """Forget the oldest fingerprints while they were stamped before ``cutoff``; returns how many."""
        ts, cap = self._ts, self._capacity
        index, hi_a, mask = self._index, self._hi, self._mask
        head, count = self._head, self._count
        gone = 0
        while count and ts[head] < cutoff:
            _unlink(index, hi_a, mask, head)
            head += 1
            if head == cap:
                head = 0
            count -= 1
            gone += 1
        self._head, self._count = head, count
        return gone

"""Whole small transactions in a read's frames, found and decoded together. No I/O, no state.

Live traffic is many small transactions, each a Begin, a few Inserts and a
Commit, with a keepalive after most of them (the walsender sends one each time
it waits for WAL while our acknowledged position is behind). ``transactions_at``
takes as many whole ones as follow each other, so that the reader hands them
on in one call. This is the reference; the accelerator (``cdc.accel``) compiles
it, and hands back to it anything it does not take on its fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._struct import BEGIN, COMMIT
from ._tuples import insert_run_at
from .messages import TupleData

# (rows, final_lsn, commit_time, end_lsn) of one whole transaction.
Txn = tuple[int, int, int, int]
# The keepalives taken with the transactions, as one: the last's (wal_end, send_time), and whether any asked
# for a reply. Positions only grow, and one reply answers any number of requests.
KeepaliveSeen = tuple[int, int, bool]
# (relation OID or -1 when every transaction is empty, their rows in order, each transaction, the keepalives
# between them or None, the index of the first frame not taken: ``start`` when none is).
Group = tuple[int, list[TupleData], list[Txn], KeepaliveSeen | None, int]

_XLOGDATA: Final = 0x77   # 'w'
_KEEPALIVE: Final = 0x6B  # 'k'
_BEGIN: Final = 0x42      # 'B'
_INSERT: Final = 0x49     # 'I'
_COMMIT: Final = 0x43     # 'C'
_KEEPALIVE_FRAME: Final = 18  # 'k', wal_end, send_time, reply_requested


def transactions_at(frames: Sequence[bytes | memoryview], start: int, offset: int, limit: int) -> Group:
    """The whole transactions of Inserts into one relation from ``frames[start]`` on, and the keepalives
    between them, each of at most ``limit`` Inserts.

    Each XLogData frame holds its message at ``offset``. The group ends before anything else: another
    relation, any other message, a transaction longer than ``limit`` or cut by the end of ``frames``, a frame
    that does not decode. Nothing here raises for what the frames hold: the reader's usual path decodes from
    the returned index on, and says what is wrong where it stands. Keepalives after the last whole
    transaction are not taken.
    """
    begin_frame, commit_frame = offset + 1 + BEGIN.size, offset + 1 + COMMIT.size
    tuples: list[TupleData] = []
    txns: list[Txn] = []
    relation_id = -1
    seen: KeepaliveSeen | None = None  # keepalives before the last whole transaction
    pending: KeepaliveSeen | None = None  # ... and since it
    i = done = start
    n = len(frames)
    while i < n:
        data = frames[i]
        if len(data) == _KEEPALIVE_FRAME and data[0] == _KEEPALIVE:
            wal_end = int.from_bytes(data[1:9], "big")
            send_time = int.from_bytes(data[9:17], "big", signed=True)
            pending = (wal_end, send_time, data[17] != 0 or (pending is not None and pending[2]))
            i += 1
            continue
        if len(data) != begin_frame or data[0] != _XLOGDATA or data[offset] != _BEGIN:
            break
        # Find the Commit before decoding anything: a transaction too long, or cut by the read, is the
        # usual path's, and its rows must not be decoded twice.
        j, end = i + 1, min(n, i + 1 + limit)
        while j < end and len(frames[j]) > offset and frames[j][0] == _XLOGDATA and frames[j][offset] == _INSERT:
            j += 1
        if j >= n:
            break
        last = frames[j]
        if len(last) != commit_frame or last[0] != _XLOGDATA or last[offset] != _COMMIT:
            break
        run: list[TupleData] = []
        if j > i + 1:
            try:
                rel, run, after = insert_run_at(frames, i + 1, offset)
            except Exception:  # noqa: BLE001 - the usual path decodes it again and raises where it stands
                break
            if after != j or relation_id not in (-1, rel):
                break  # Inserts into two relations in one transaction, or another relation than the group's
            relation_id = rel
        final_lsn, commit_time, _ = BEGIN.unpack_from(data, offset + 1)
        tuples += run
        txns.append((len(run), final_lsn, commit_time, COMMIT.unpack_from(last, offset + 1)[2]))
        i = done = j + 1
        if pending is not None:
            seen = (pending[0], pending[1], pending[2] or (seen is not None and seen[2]))
            pending = None
    return relation_id, tuples, txns, seen, done

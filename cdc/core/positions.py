"""Positions (commit_lsn, commit_seq) that are not WAL positions: the initial copy's and backfill's.

Every event in ClickHouse carries a position; the newest one is the
high-water mark ``cdc run`` skips up to. Rows that did not come from the slot
need positions that can never be taken for (or sort after) a streamed one:

- the initial snapshot copy (cdc/pipeline/snapshot.py) uses commit_lsn 0 and
  commit_seq = the row's index in the copy, then marks its end at the slot's
  consistent point - 1 (a real WAL position); a high-water mark still at
  commit_lsn 0 is how ``cdc run`` recognises an interrupted copy, so backfill
  refuses to run then (its rows would hide that);
- ``cdc backfill`` uses commit_lsn = 1 + (outbox id >> 32) and
  commit_seq = outbox id & 0xFFFFFFFF: one fixed position per outbox row, so
  a row backfilled twice gets the same position (its dead letter, keyed by
  position, collapses too) and two rows never share one.

WAL starts at the first segment, 0/100000 even with the smallest (1 MB)
segment size, so no commit record has an LSN below ``SYNTHETIC_LIMIT``. Backfill
positions stay below it for outbox ids under 2^51 (ids beyond are refused).
Because they sort below every streamed position, backfilled rows never move the
high-water mark past a real transaction: ``cdc run`` skips nothing because of them.
"""

from __future__ import annotations

from typing import Final

SNAPSHOT_LSN: Final = 0
BACKFILL_BASE: Final = 1
SYNTHETIC_LIMIT: Final = 0x100000
MAX_BACKFILL_ID: Final = (1 << 51) - 1


def is_synthetic(commit_lsn: int) -> bool:
    """True for the initial copy's and backfill's positions: not a WAL position at all."""
    return commit_lsn < SYNTHETIC_LIMIT


def backfill_position(outbox_id: int) -> tuple[int, int]:
    if not 0 <= outbox_id <= MAX_BACKFILL_ID:
        raise ValueError(f"outbox id {outbox_id} is outside 0..2^51-1, which backfill positions can encode")
    return BACKFILL_BASE + (outbox_id >> 32), outbox_id & 0xFFFFFFFF


def describe(commit_lsn: int) -> str | None:
    if commit_lsn == SNAPSHOT_LSN:
        return "initial copy"
    if is_synthetic(commit_lsn):
        return "backfill"
    return None

"""A batch as the columns the sink INSERTs: timestamps in the tables' own types, the batch's inserted_at appended.

The stream column, when the sink writes one, is appended by the sink (cdc/sink/clickhouse/streams.py).
"""

from __future__ import annotations

from typing import Any, Final

from ...core.events import EVENT_COLUMNS, Batch
from .layout import Layout

__all__ = ["dead_letter_columns", "event_columns"]

_OCCURRED_AT: Final = EVENT_COLUMNS.index("occurred_at")
_COMMITTED_AT: Final = EVENT_COLUMNS.index("committed_at")


def event_columns(batch: Batch, layout: Layout, inserted_at: int) -> list[list[Any]] | None:
    if len(batch.columns) != len(EVENT_COLUMNS):
        raise ValueError(f"batch {batch.seq} has {len(batch.columns)} columns, not {len(EVENT_COLUMNS)}")
    rows = batch.rows
    if rows == 0:
        return None
    if any(len(column) != rows for column in batch.columns):
        raise ValueError(f"batch {batch.seq} has columns of different lengths")
    # A new outer list; the batch's own column lists go to the driver as they
    # are (it sends slices of them), and from_micros never changes them, so a
    # retried batch sends the same values.
    columns = list(batch.columns)
    columns[_OCCURRED_AT] = layout.occurred_at.from_micros(columns[_OCCURRED_AT], "occurred_at")
    columns[_COMMITTED_AT] = layout.committed_at.from_micros(columns[_COMMITTED_AT], "committed_at")
    columns.append([inserted_at] * rows)
    return columns


def dead_letter_columns(batch: Batch, layout: Layout, inserted_at: int) -> list[list[Any]] | None:
    letters = batch.dead_letters
    if not letters:
        return None
    committed_at = [letter.committed_at for letter in letters]
    return [
        [letter.commit_lsn for letter in letters],
        [letter.commit_seq for letter in letters],
        layout.dead_letter_committed_at.to_ticks(committed_at, "dead letter committed_at"),
        [letter.relation for letter in letters],
        [letter.reason for letter in letters],
        [letter.row_json for letter in letters],
        [inserted_at] * len(letters),
    ]

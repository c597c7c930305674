"""What the core hands a sink: a Batch of events, column by column, and the rows it could not take.

Column order of every Batch is EVENT_COLUMNS (also the ClickHouse events
table's insert order). Timestamps are plain ints (microseconds since
1970-01-01T00:00:00 UTC, negative before it), not datetimes: building a
datetime per row is too slow for the hot path. A sink turns them into its
column's ticks with integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

EVENT_COLUMNS: Final = (
    "unique_id",         # bytes: UTF-8, as PostgreSQL sent it (str accepted too), never empty
    "event_type",        # str
    "occurred_at",       # int: microseconds since the Unix epoch, UTC
    "environment",       # str
    "payload",           # bytes: the jsonb text exactly as PostgreSQL printed it, UTF-8
    "metadata_version",  # int
    "outbox_id",         # int: the outbox row's id
    "commit_lsn",        # int: LSN of the transaction's commit record
    "commit_seq",        # int: 0-based position of the row inside its transaction
    "committed_at",      # int: microseconds since the Unix epoch, UTC (the commit time)
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row the sink cannot take, kept with why and where it came from."""

    commit_lsn: int
    commit_seq: int
    committed_at: datetime  # tz-aware (unlike Batch's int microseconds: a rare path)
    relation: str      # "schema.table"
    reason: str        # one line, for a human
    row_json: str      # the row's columns as PostgreSQL sent them, as a JSON object


@dataclass(slots=True)
class Batch:
    """Rows to store together: one list per column of EVENT_COLUMNS, plus dead letters.

    ``occurred_at`` and ``committed_at`` hold int microseconds since the Unix
    epoch (UTC), never datetimes. A sink must not change the lists: the flusher
    retries the same Batch, and a retry must send the same values.

    ``seq`` orders batches; the pipeline acknowledges by it. ``nbytes`` is an
    estimate of the payload size, for the byte-size flush trigger.
    """

    seq: int
    columns: tuple[list[Any], ...] = field(default_factory=lambda: tuple([] for _ in EVENT_COLUMNS))
    dead_letters: list[DeadLetter] = field(default_factory=list)
    nbytes: int = 0

    @property
    def rows(self) -> int:
        return len(self.columns[0])

    def __len__(self) -> int:
        return len(self.columns[0]) + len(self.dead_letters)

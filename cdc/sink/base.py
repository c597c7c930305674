"""What the pipeline needs from a destination: the ``Sink`` protocol and the batch it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

# Column order of every Batch, and of the ClickHouse events table's insert.
# Timestamps are plain ints (microseconds since 1970-01-01T00:00:00 UTC, negative
# before it), not datetimes: building a datetime per row is too slow for the
# hot path. The sink turns them into its column's ticks with integer arithmetic.
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


class SinkError(Exception):
    """The sink could not store a batch. Retrying may help; the batch is not stored."""


class SinkConfigError(Exception):
    """The sink cannot work at all (unreachable at start-up, wrong schema): say what to do."""


class Sink(Protocol):
    """A destination that stores batches atomically enough for exactly-once delivery.

    ``write`` must either store every row of the batch or raise; a batch that
    was partly stored before a crash is completed on restart by skipping rows at
    or below ``high_water_mark``.
    """

    def high_water_mark(self) -> tuple[int, int] | None:
        """(commit_lsn, commit_seq) of the newest stored row, or None when empty. Must be fast."""
        ...

    def recent_unique_ids(self, max_count: int, max_age_seconds: float) -> list[str]:
        """unique_ids of the newest stored rows, oldest first, for rebuilding the dedup window."""
        ...

    def timestamp_bounds(self) -> tuple[datetime, datetime]:
        """The range of timestamps the destination can store (inclusive, tz-aware datetimes).

        Batch timestamps outside it (compared as microseconds) must be dead-lettered before write.
        """
        ...

    def write(self, batch: Batch) -> None:
        """Store the batch (dead letters first, then events), or raise SinkError."""
        ...

    def mark_position(self, commit_lsn: int, commit_seq: int) -> None:
        """Make ``high_water_mark()`` at least this position, with no event stored."""
        ...

    def prune_progress(self, keep_seconds: float) -> int:
        """Forget positions older than keep_seconds (never the newest); returns how many units were dropped."""
        ...

    def close(self) -> None: ...

"""What the pipeline needs from a destination: the ``Sink`` protocol and the batch it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

# Column order of every Batch, and of the ClickHouse events table's insert.
EVENT_COLUMNS: Final = (
    "unique_id",         # str, never empty
    "event_type",        # str
    "occurred_at",       # datetime, tz-aware UTC
    "environment",       # str
    "payload",           # bytes: the jsonb text exactly as PostgreSQL printed it, UTF-8
    "metadata_version",  # int
    "outbox_id",         # int: the outbox row's id
    "commit_lsn",        # int: LSN of the transaction's commit record
    "commit_seq",        # int: 0-based position of the row inside its transaction
    "committed_at",      # datetime, tz-aware UTC
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A row the sink cannot take, kept with why and where it came from."""

    commit_lsn: int
    commit_seq: int
    committed_at: datetime
    relation: str      # "schema.table"
    reason: str        # one line, for a human
    row_json: str      # the row's columns as PostgreSQL sent them, as a JSON object


@dataclass(slots=True)
class Batch:
    """Rows to store together: one list per column of EVENT_COLUMNS, plus dead letters.

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
        """The range of timestamps the destination can store (inclusive, tz-aware)."""
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

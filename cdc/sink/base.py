"""What the pipeline needs from a destination (``Sink``), and what the DBA commands read from it (``SinkAdmin``).

A sink module implements both and registers its URL scheme in cdc/sink/__init__.py
(docs/architecture.md: how to add a sink).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

from ..core.events import Batch
from ..errors import UserError

__all__ = ["LatestCommit", "Sink", "SinkAdmin", "SinkConfigError", "SinkError"]


class SinkError(Exception):
    """The sink could not store a batch. Retrying may help; the batch is not stored."""


class SinkConfigError(UserError):
    """The sink cannot work at all (unreachable at start-up, wrong schema): say what to do."""


class Sink(Protocol):
    """A destination that stores batches atomically enough for exactly-once delivery.

    Every stored event keeps its position (commit_lsn, commit_seq); the newest
    is the high-water mark. ``write`` must either store every row of the batch
    or raise; a batch that was partly stored before a crash is completed on
    restart by skipping rows at or below ``high_water_mark``, so the mark must
    never cover a row that is not stored. Called from two threads: ``write``
    and ``prune_progress`` from the flusher's, the rest before it starts.
    """

    def ensure_schema(self) -> None:
        """Create what is missing (idempotent), check what exists; SinkConfigError says what is wrong."""
        ...

    def high_water_mark(self) -> tuple[int, int] | None:
        """(commit_lsn, commit_seq) of the newest stored row, or None when empty. Must be fast."""
        ...

    def recent_unique_ids(self, max_count: int, max_age_seconds: float) -> list[str]:
        """unique_ids of the newest stored rows, oldest first, for rebuilding the dedup window."""
        ...

    def recent_unique_id_blocks(self, max_count: int, max_age_seconds: float) -> Generator[list[str], None, None]:
        """The same ids streamed in blocks, oldest first (an id stored twice may come twice): bounded memory."""
        ...

    def timestamp_bounds(self) -> tuple[datetime, datetime]:
        """The range of timestamps the destination can store (inclusive, tz-aware datetimes).

        Batch timestamps outside it (compared as microseconds) must be dead-lettered before write.
        """
        ...

    def write(self, batch: Batch) -> None:
        """Store the batch (dead letters first, then events) with the positions of its rows, or raise SinkError."""
        ...

    def mark_position(self, commit_lsn: int, commit_seq: int) -> None:
        """Make ``high_water_mark()`` at least this position, with no event stored."""
        ...

    def prune_progress(self, keep_seconds: float) -> int:
        """Forget positions stored more than keep_seconds ago, never the newest (what ``high_water_mark`` and
        ``recent_unique_ids`` read); returns how many units of storage were dropped."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LatestCommit:
    """The newest stored event's transaction, for ``cdc status``."""

    commit_lsn: int
    committed_at: datetime


class SinkAdmin(Protocol):
    """What ``cdc status``, ``doctor``, ``checkpoint``, ``slot list`` and ``outbox prune`` read from a sink.

    Read-only: opening one connects, creates nothing. Failures are SinkConfigError or SinkError, one line each.
    """

    url: str       # where, for messages: never a password
    version: str   # the server's
    database: str  # where the tables are

    def high_water_mark(self) -> tuple[int, int] | None: ...

    def latest(self) -> LatestCommit | None:
        """The newest stored event's commit LSN and commit time, or None when there is none."""
        ...

    def counts(self) -> tuple[int, int]:
        """(events, dead letters) as stored: a row delivered twice may count twice."""
        ...

    def last_inserted_at(self) -> datetime | None:
        """When the sink last stored an event, by its clock."""
        ...

    def version_warning(self) -> tuple[str, str] | None:
        """(what is wrong, what fixes it) when this server version stores less than cdc can send."""
        ...

    def schema_problems(self) -> list[str]:
        """What is missing from the sink's tables: [] when everything ``cdc run`` needs is there."""
        ...

    def has_event(self, unique_id: str, event_type: str | None = None, occurred_at: datetime | None = None) -> bool:
        ...

    def has_dead_letter(self, relation: str, outbox_id: int) -> bool:
        """Whether the dead-letter table holds the outbox row with this id."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> SinkAdmin: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

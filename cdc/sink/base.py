"""What the pipeline needs from a destination (``Sink``), and what the DBA commands read from it (``SinkAdmin``).

A sink module implements both and registers its URL scheme in cdc/sink/__init__.py
(docs/architecture.md: how to add a sink).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from ..core.events import Batch
from ..core.reconcile import Bucket, StoredScope
from ..errors import UserError

__all__ = ["LatestCommit", "LedgerCheck", "Sink", "SinkAdmin", "SinkConfigError", "SinkError", "StoredIds",
           "StreamSummary"]


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

    def recent_unique_ids(self, max_count: int, max_age_seconds: float, *, held: bool = False) -> list[str]:
        """unique_ids of the newest stored rows, oldest first, for rebuilding the dedup window.

        ``held``: only ids the events themselves still hold, however the positions' ledger remembers them
        (for a replay or a new slot's copy, which must restore what the events lost); slower.
        """
        ...

    def recent_unique_id_blocks(
        self, max_count: int, max_age_seconds: float, *, held: bool = False
    ) -> Generator[Sequence[bytes], None, None]:
        """The same ids streamed in blocks as UTF-8 bytes (what the window fingerprints), oldest first (an id
        stored twice may come twice): bounded memory.

        What the pipeline rebuilds its window with; the generator holds the sink's connection until it ends or
        is closed (close it when stopping early)."""
        ...

    def ledger_warning(self) -> str | None:
        """What to do when the positions' ledger claims recent events the sink no longer holds (a TRUNCATE,
        a restore from an older copy...), or None. Read at start-up: must be cheap."""
        ...

    def stored_ids(self, relation: str) -> StoredIds:
        """What the sink holds of the outbox ``relation`` ("schema.table"), by buckets of id hashes, over a
        connection of its own (close it)."""
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

    def ensure_streams(self) -> list[str]:
        """Make the tables keep several slots' positions apart (settings.stream), if made before they could;
        what was done. Call only while nothing writes to them (``cdc migrate --shards``, a reshard)."""
        ...

    def prune_progress(self, keep_seconds: float) -> int:
        """Forget positions stored more than keep_seconds ago, never the newest (what ``high_water_mark`` and
        ``recent_unique_ids`` read); returns how many units of storage were dropped."""
        ...

    def close(self) -> None: ...


class StoredIds(Protocol):
    """What a sink holds, by buckets of unique_id hashes (cdc/core/reconcile.py), each computed by the sink:
    ``cdc verify`` and a new slot's first copy compare it with the outbox. Dead letters count as held."""

    where: str       # the events table, for messages: "database.table"
    max_delete: int  # the most unique_ids ``delete`` takes at once

    def missing_tables(self) -> list[str]:
        """The tables that must exist and do not ([] when all do)."""
        ...

    def sums(self, scope: StoredScope) -> dict[int, Bucket]:
        """Per bucket, the count and checksum of the distinct unique_ids held in scope."""
        ...

    def hashes(self, scope: StoredScope, buckets: Sequence[int]) -> Iterator[tuple[int, int, int]]:
        """(h, 1 if any of its rows is in scope else 0, an outbox id one claims) of every id held whose hash
        is in ``buckets``, in scope or not, sorted by h."""
        ...

    def unique_ids(self, hashes: Sequence[int]) -> dict[int, tuple[str, int]]:
        """h -> (unique_id, an outbox id it claims), for naming ids in a report."""
        ...

    def delete(self, scope: StoredScope, unique_ids: Sequence[str]) -> int:
        """Delete the rows in scope with these unique_ids, and their positions; returns how many ids."""
        ...

    def last_read(self) -> tuple[int, int]:
        """(rows, bytes) the sink read for the last query."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> StoredIds: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """Whether the positions' ledger claims recent events the sink no longer holds."""

    recorded: int   # distinct unique_ids the ledger's newest entries name
    absent: int     # ... that the events no longer hold
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "absent": self.absent, "warning": self.warning}


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """One stream's (one slot's) place in the sink, for ``cdc shards show`` and ``cdc status``."""

    stream: int
    high_water_mark: tuple[int, int]
    committed_at: datetime
    last_inserted_at: datetime
    recent_events: int  # events stored in the last window


@dataclass(frozen=True, slots=True)
class LatestCommit:
    """The newest stored event's transaction, for ``cdc status``."""

    commit_lsn: int
    committed_at: datetime


class ReplicaState(Protocol):
    """One replicated table on the replica the admin is connected to (a sink cluster)."""

    def summary(self) -> str:
        """One line: which table, which replica, how far behind."""
        ...

    def problems(self) -> list[tuple[bool, str]]:
        """(critical, message) pairs; critical ones stop inserts into this replica."""
        ...

    def as_dict(self) -> dict[str, Any]: ...


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

    def stream_summaries(self, window_seconds: int = 60) -> dict[int, StreamSummary]:
        """Per stream: its high-water mark, newest commit and insert times, events stored in the window;
        empty when the sink keeps no streams apart (every row is stream 0's)."""
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

    def replicas(self) -> Sequence[ReplicaState]:
        """Replica health of the sink's tables: empty when they are not replicated."""
        ...

    def has_event(self, unique_id: str, event_type: str | None = None, occurred_at: datetime | None = None) -> bool:
        ...

    def has_dead_letter(self, relation: str, outbox_id: int) -> bool:
        """Whether the dead-letter table holds the outbox row with this id."""
        ...

    def ledger_check(self) -> LedgerCheck:
        """Whether the positions' ledger claims recent events the sink no longer holds."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> SinkAdmin: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

"""Where committed rows become buffered events: skip what is stored, convert, dead-letter, deduplicate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import compress
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from ..errors import PipelineError
from ..failpoints import Failpoints
from ..pgoutput.framing import Txn
from ..pgoutput.messages import Relation, TupleData
from .buffer import BatchBuilder
from .outbox_binary import BinaryRowConverter, BinaryUnreadable
from .outbox import EventRow, OutboxSchemaError, Rejected, RowConverter, UnreadableRows
from .tracker import AckTracker
from .transactions import each_transaction

Converter = RowConverter | BinaryRowConverter | UnreadableRows


class Dedup(Protocol):
    """An id may come as str or as its UTF-8 bytes (the rows carry bytes, storage gives back str)."""

    def admit_many(self, unique_ids: Sequence[str | bytes], now: float) -> list[bool]: ...

    def remember(self, ids_oldest_first: Iterable[str | bytes], now: float) -> int: ...

    def __len__(self) -> int:
        """How many ids it remembers."""
        ...


@dataclass(slots=True)
class Counters:
    rows_seen: int = 0
    rows_buffered: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    already_stored: int = 0
    left_to_next_generation: int = 0


class Collector:
    """The RowHandler of the pipeline: receives committed rows in commit order.

    Rows come in runs (consecutive rows of one transaction and relation) and
    are converted, deduplicated and buffered a run at a time: per-row method
    calls would cost as much as the work. Whenever the open batch is full,
    ``on_full`` is called (cdc.core.handoff seals it and queues it for the
    flusher), so a batch never holds more than ``max_rows`` rows however long
    a run is.

    Rows at or below ``high_water_mark`` are stored already and skipped; the
    mark moves only through ``skip_up_to`` and ``buffered_is_stored``. Rows of
    transactions committed at or after ``stop_before`` (a reshard's boundary:
    the next generation delivers them) are skipped too.
    """

    def __init__(
        self,
        *,
        outbox: tuple[str, str],
        builder: BatchBuilder,
        tracker: AckTracker,
        dedup: Dedup,
        high_water_mark: tuple[int, int] | None = None,
        bounds: tuple[datetime, datetime],
        max_payload_bytes: int,
        log: FilteringBoundLogger,
        on_full: Callable[[], None],
        failpoints: Failpoints | None = None,
        on_message: Callable[[int, str, bytes], None] | None = None,
    ) -> None:
        self._outbox = outbox
        # (open batch seq, prefix, content) of each transactional logical message: heartbeats.
        self._on_message = on_message
        self._on_full = on_full
        self._failpoints = failpoints
        self._builder = builder
        self._tracker = tracker
        self._dedup = dedup
        self.high_water_mark = high_water_mark
        self.stop_before: int | None = None
        # Rows from the stream come in pgoutput's binary format (cdc/core/outbox_binary.py); rows read with
        # a query (the first copy, backfill: a relation id of 0) are always text.
        self.binary = False
        self._bounds = bounds
        self._max_payload = max_payload_bytes
        self._log = log
        # relation id -> (the Relation, its converter; rows of other tables are dead-lettered).
        self._converters: dict[int, tuple[Relation, Converter]] = {}
        self.counters = Counters()
        # Position of the newest row handed to the buffer: once the flusher is
        # idle it is stored, which makes it the high-water mark without asking.
        self.last_position: tuple[int, int] | None = None

    def skip_up_to(self, position: tuple[int, int] | None) -> None:
        """From now on, rows at or below ``position`` (None: none) are taken as stored and skipped."""
        self.high_water_mark = position

    def buffered_is_stored(self) -> None:
        """Everything handed to the buffer is stored: if the server sends those rows again, skip them.

        Known here without asking the sink (which may be unreachable too after a lost connection).
        """
        stored, known = self.last_position, self.high_water_mark
        if stored is not None and (known is None or stored > known):
            self.high_water_mark = stored

    def relation(self, relation: Relation) -> None:
        self._converters[relation.relation_id] = (relation, self._converter_for(relation))

    def _converter_for(self, relation: Relation) -> Converter:
        if (relation.namespace, relation.name) != self._outbox:
            # With publish_via_partition_root the server describes the partition a
            # row went to before sending the row as the root's: no rows come for
            # it. Rows that do come for another table are kept, not dropped: a
            # publication changed under us must not lose events.
            return UnreadableRows(
                relation,
                f"row of {relation.namespace}.{relation.name}, which is not the outbox "
                f"{self._outbox[0]}.{self._outbox[1]}: check the publication's tables and publish_via_partition_root",
            )
        try:
            if self.binary and relation.relation_id:
                return BinaryRowConverter(relation, bounds=self._bounds, max_payload_bytes=self._max_payload)
            return RowConverter(relation, bounds=self._bounds, max_payload_bytes=self._max_payload)
        except BinaryUnreadable as exc:
            # Read as text these rows would be events: stop, acknowledge nothing more; the next run streams text.
            raise PipelineError(f"{exc}; restart cdc: it will stream as text") from None
        except OutboxSchemaError as exc:
            reason = f"{exc}; rows written meanwhile go to the dead-letter table"
            self._log.error("outbox rows cannot be read as events", reason=reason)
            return UnreadableRows(relation, reason)

    def rows(
        self, relation: Relation, tuples: Sequence[TupleData], commit_lsn: int, first_seq: int, commit_time: int
    ) -> None:
        """Consecutive rows of one relation, at positions first_seq, first_seq + 1... of the transaction."""
        self.counters.rows_seen += len(tuples)
        cached = self._converters.get(relation.relation_id)
        if cached is None or (cached[0] is not relation and cached[0] != relation):
            # A row held from before an ALTER TABLE (streamed transactions): read it as it was.
            cached = (relation, self._converter_for(relation))
        converter = cached[1]
        start = 0
        if self.stop_before is not None and commit_lsn >= self.stop_before:
            self.counters.left_to_next_generation += len(tuples)
            return
        hwm = self.high_water_mark
        if hwm is not None and (commit_lsn, first_seq) <= hwm:
            start = len(tuples) if commit_lsn < hwm[0] else min(len(tuples), hwm[1] - first_seq + 1)
            self.counters.already_stored += start
        builder = self._builder
        if not start and 0 < len(tuples) <= builder.max_rows - builder.rows:
            # The whole run fits the open batch (a small transaction's always does): no slicing.
            self._buffer(converter, tuples, commit_lsn, first_seq, commit_time)
            if builder.full():
                self._on_full()
            return
        while start < len(tuples):
            end = start + max(1, builder.max_rows - builder.rows)
            self._buffer(converter, tuples[start:end], commit_lsn, first_seq + start, commit_time)
            start = end
            if builder.full():
                self._on_full()

    def transactions(self, relation: Relation, tuples: Sequence[TupleData], txns: Sequence[Txn]) -> None:
        """Whole transactions into one relation, in commit order: ``rows`` and ``commit`` for each, but
        converted per transaction and deduplicated and buffered once for all (live traffic's small
        transactions). Whatever is unusual about them (a relation not the cached one, rows already
        stored or left to the next generation, more rows than the open batch has room for) takes them
        one at a time instead."""
        cached = self._converters.get(relation.relation_id)
        builder, hwm, stop = self._builder, self.high_water_mark, self.stop_before
        if (cached is None or cached[0] is not relation or len(tuples) > builder.max_rows - builder.rows
                or (hwm is not None and txns[0][1] <= hwm[0]) or (stop is not None and txns[-1][1] >= stop)):
            each_transaction(self, relation, tuples, txns)
            return
        counters, converter = self.counters, cached[1]
        counters.rows_seen += len(tuples)
        rows, commits, rejections = converter.convert_transactions(tuples, txns)
        for commit_lsn, commit_time, rejected in rejections:
            self._reject(converter, rejected, commit_lsn, commit_time)
        if rows:
            admitted = self._admitted(rows)
            if not all(admitted):
                kept_commits, k = [], 0
                for n, commit_lsn, commit_time in commits:
                    kept = sum(admitted[k:k + n])
                    k += n
                    if kept:
                        kept_commits.append((kept, commit_lsn, commit_time))
                kept_rows: list[EventRow] = list(compress(rows, admitted))
                counters.duplicates += len(rows) - len(kept_rows)
                rows, commits = kept_rows, kept_commits
        if rows:
            counters.rows_buffered += len(rows)
            builder.extend_many(rows, commits)
            self.last_position = (commits[-1][1], rows[-1][-1])
            if self._failpoints is not None:
                for _ in rows:
                    self._failpoints.hit("row")
        # Every row of these transactions is in the open batch: one entry stands for all their commits.
        self._tracker.commit(txns[-1][3], builder.seq)
        if builder.full():
            self._on_full()

    def _admitted(self, rows: list[EventRow]) -> list[bool]:
        """Which rows are new: the dedup window's answer for their unique_ids, in order."""
        return self._dedup.admit_many([row[0] for row in rows], time.monotonic())

    def _reject(self, converter: Converter, rejected: list[Rejected], commit_lsn: int, commit_time: int) -> None:
        for seq, values, reason in rejected:
            self.counters.dead_letters += 1
            self._builder.dead_letter(converter.dead_letter(values, commit_lsn, seq, commit_time, reason))
            self._log.warning("row dead-lettered", reason=reason, commit_lsn=commit_lsn, seq=seq)

    def _buffer(
        self, converter: Converter, tuples: Sequence[TupleData], commit_lsn: int,
        first_seq: int, commit_time: int,
    ) -> None:
        counters = self.counters
        rows, rejected = converter.convert_many(tuples, first_seq)
        if rejected:
            self._reject(converter, rejected, commit_lsn, commit_time)
        if not rows:
            return
        admitted = self._admitted(rows)
        if not all(admitted):
            kept: list[EventRow] = list(compress(rows, admitted))
            counters.duplicates += len(rows) - len(kept)
            if not kept:
                return
            rows = kept
        counters.rows_buffered += len(rows)
        self._builder.extend(rows, commit_lsn, commit_time)
        self.last_position = (commit_lsn, rows[-1][-1])
        if self._failpoints is not None:
            for _ in rows:
                self._failpoints.hit("row")

    def commit(self, end_lsn: int) -> None:
        self._tracker.commit(end_lsn, self._builder.seq)

    def message(self, prefix: str, content: bytes) -> None:
        # Never a row, never a dead letter: the transaction's commit still moves the acknowledgement.
        if self._on_message is not None:
            self._on_message(self._builder.seq, prefix, content)

"""Where committed rows become buffered events: skip what is stored, convert, dead-letter, deduplicate."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from .buffer import BatchBuilder
from .failpoints import Failpoints
from .outbox import OutboxSchemaError, RowConverter, RowRejected, UnreadableRows
from .pgoutput.messages import Relation, TupleData
from .tracker import AckTracker


class Dedup(Protocol):
    def admit(self, unique_id: str, now: float) -> bool: ...

    def remember(self, ids_oldest_first: Iterable[str], now: float) -> int: ...


@dataclass(slots=True)
class Counters:
    rows_seen: int = 0
    rows_buffered: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    already_stored: int = 0


class Collector:
    """The RowHandler of the pipeline: receives committed rows in commit order."""

    def __init__(
        self,
        *,
        outbox: tuple[str, str],
        builder: BatchBuilder,
        tracker: AckTracker,
        dedup: Dedup,
        high_water_mark: tuple[int, int] | None,
        bounds: tuple[datetime, datetime],
        max_payload_bytes: int,
        log: FilteringBoundLogger,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._outbox = outbox
        self._failpoints = failpoints
        self._builder = builder
        self._tracker = tracker
        self._dedup = dedup
        self.high_water_mark = high_water_mark
        self._bounds = bounds
        self._max_payload = max_payload_bytes
        self._log = log
        # relation id -> (the Relation, its converter; rows of other tables are dead-lettered).
        self._converters: dict[int, tuple[Relation, RowConverter | UnreadableRows]] = {}
        self.counters = Counters()
        # Position of the newest row handed to the buffer: once the flusher is
        # idle it is stored, which makes it the high-water mark without asking.
        self.last_position: tuple[int, int] | None = None

    def relation(self, relation: Relation) -> None:
        self._converters[relation.relation_id] = (relation, self._converter_for(relation))

    def _converter_for(self, relation: Relation) -> RowConverter | UnreadableRows:
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
            return RowConverter(relation, bounds=self._bounds, max_payload_bytes=self._max_payload)
        except OutboxSchemaError as exc:
            reason = f"{exc}; rows written meanwhile go to the dead-letter table"
            self._log.error("outbox rows cannot be read as events", reason=reason)
            return UnreadableRows(relation, reason)

    def row(self, relation: Relation, values: TupleData, commit_lsn: int, seq: int, commit_time: int) -> None:
        counters = self.counters
        counters.rows_seen += 1
        cached = self._converters.get(relation.relation_id)
        if cached is None or (cached[0] is not relation and cached[0] != relation):
            # A row held from before an ALTER TABLE (streamed transactions): read it as it was.
            cached = (relation, self._converter_for(relation))
        converter = cached[1]
        hwm = self.high_water_mark
        if hwm is not None and (commit_lsn, seq) <= hwm:
            counters.already_stored += 1
            return
        try:
            row = converter.convert(values)
        except RowRejected as exc:
            counters.dead_letters += 1
            self._builder.dead_letter(converter.dead_letter(values, commit_lsn, seq, commit_time, str(exc)))
            self._log.warning("row dead-lettered", reason=str(exc), commit_lsn=commit_lsn, seq=seq)
            return
        if not self._dedup.admit(row[0], time.monotonic()):
            counters.duplicates += 1
            return
        counters.rows_buffered += 1
        self._builder.append(row, commit_lsn, seq, commit_time)
        self.last_position = (commit_lsn, seq)
        if self._failpoints is not None:
            self._failpoints.hit("row")

    def commit(self, end_lsn: int) -> None:
        self._tracker.commit(end_lsn, self._builder.seq)

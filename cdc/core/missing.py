"""The rows found missing, kept to be delivered: 8 bytes a row, grouped by the partition that holds them.

Fetching them back a partition at a time, with that partition's created_at
range, lets PostgreSQL look each id up in one partition's primary key instead
of in every partition's.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from .reconcile import Missing

_FETCH: Final = 10_000

# A row as the outbox holds it: REQUIRED_COLUMNS as text bytes, its id, its created_at.
Row = tuple[tuple[bytes | None, ...], int, datetime]


class RowSource(Protocol):
    def rows(self, low: int, high: int, ids: list[int]) -> Iterator[Row]: ...


@dataclass(slots=True)
class _Partition:
    ids: array[int] = field(default_factory=lambda: array("q"))
    low: int = 0
    high: int = 0


class MissingRows:
    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}
        self.count = 0

    def add(self, found: Missing) -> None:
        part = self._partitions.get(found.partition)
        if part is None:
            part = self._partitions[found.partition] = _Partition(low=found.created, high=found.created)
        part.ids.append(found.outbox_id)
        part.low = min(part.low, found.created)
        part.high = max(part.high, found.created)
        self.count += 1

    def fetch(self, source: RowSource) -> Iterator[Row]:
        """The rows, as the outbox holds them, a partition and ``_FETCH`` ids at a time."""
        for part in self._partitions.values():
            ids = sorted(part.ids)
            for start in range(0, len(ids), _FETCH):
                yield from source.rows(part.low, part.high, ids[start:start + _FETCH])

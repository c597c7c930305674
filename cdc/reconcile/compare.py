"""Comparing the two sides: bucket sums first, then a merge of the differing buckets' sorted hashes.

Nothing here does I/O: the servers' answers come in as plain rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from .hashing import checksum


@dataclass(frozen=True, slots=True)
class Bucket:
    """Distinct unique_ids in one bucket: how many, and the sum of their hashes modulo 2^64."""

    count: int
    checksum: int


def read_sums(rows: Iterable[tuple[int, int, int | Decimal]]) -> dict[int, Bucket]:
    """(bucket, count, sum of hashes) rows, as either server returns them, keyed by bucket."""
    return {int(b): Bucket(int(n), checksum(int(s))) for b, n, s in rows if int(n)}


def differing(pg: Mapping[int, Bucket], ch: Mapping[int, Bucket]) -> list[int]:
    """The buckets whose count or checksum differs (a bucket absent on one side counts as empty)."""
    return sorted(b for b in pg.keys() | ch.keys() if pg.get(b) != ch.get(b))


def chunks(buckets: Sequence[int], weight: Callable[[int], int], limit: int) -> list[list[int]]:
    """``buckets`` in order, cut into runs whose total weight stays under ``limit`` (a heavier bucket alone)."""
    runs: list[list[int]] = []
    run: list[int] = []
    total = 0
    for b in buckets:
        w = weight(b)
        if run and total + w > limit:
            runs.append(run)
            run, total = [], 0
        run.append(b)
        total += w
    if run:
        runs.append(run)
    return runs


@dataclass(frozen=True, slots=True)
class Missing:
    """An id the outbox holds and ClickHouse does not: its outbox row (the lowest id among retries)."""

    h: int
    outbox_id: int
    created: int    # the row's created_at, microseconds since the Unix epoch
    partition: int  # the oid of the table (partition) that holds it


@dataclass(frozen=True, slots=True)
class Unexpected:
    """An id ClickHouse holds, in scope, that the outbox does not: one of its rows' claimed outbox_id."""

    h: int
    outbox_id: int


Difference = Union[Missing, Unexpected]


class OrderError(ValueError):
    """A stream was not sorted by hash: the servers disagree on order, and no merge can be trusted."""


def merge(
    outbox: Iterable[tuple[int, int, int, int]], clickhouse: Iterable[tuple[int, int, int]]
) -> Iterator[Difference]:
    """The differences between two streams sorted by hash.

    ``outbox`` rows are (h, outbox_id, created, partition) sorted by (h, outbox_id); an
    id repeated by retries comes several times and counts once. ``clickhouse``
    rows are (h, in_scope, outbox_id), one per hash, with in_scope 1 when one
    of its rows belongs to the scope being checked. A hash ClickHouse holds
    only out of scope still accounts for an outbox row (an event delivered
    before the scope's first id, as a retry of it), but is never unexpected.
    """
    ch = iter(clickhouse)
    current = next(ch, None)
    last_ch: int | None = None
    previous: int | None = None
    for h, outbox_id, created, partition in outbox:
        if previous is not None and h <= previous:
            if h == previous:
                continue
            raise OrderError(f"outbox hashes out of order: {h} after {previous}")
        previous = h
        while current is not None and current[0] < h:
            last_ch = _check_order(current[0], last_ch)
            if current[1]:
                yield Unexpected(current[0], current[2])
            current = next(ch, None)
        if current is not None and current[0] == h:
            last_ch = _check_order(current[0], last_ch)
            current = next(ch, None)
            continue
        yield Missing(h, outbox_id, created, partition)
    while current is not None:
        last_ch = _check_order(current[0], last_ch)
        if current[1]:
            yield Unexpected(current[0], current[2])
        current = next(ch, None)


def _check_order(h: int, last: int | None) -> int:
    if last is not None and h <= last:
        raise OrderError(f"ClickHouse hashes out of order or repeated: {h} after {last}")
    return h

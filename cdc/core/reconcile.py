"""Reconciling the outbox with what a sink holds, the part without I/O: one hash of a unique_id that
every server computes alike, buckets of it, bucket sums, and the merge of two sorted streams of hashes.

Used by ``cdc verify`` (cdc/admin/verify.py), its repair, and a new slot's first copy
(cdc/pipeline/gap.py); each side's queries live with its server (cdc/pg/reconcile.py,
cdc/sink/clickhouse/stored.py).

h(u) = the first 8 bytes of MD5(u's UTF-8 bytes), read big-endian as a signed
64-bit integer. PostgreSQL, ClickHouse (18.16 as well as current releases) and
Python compute exactly the same value (tests/reconcile/test_hashing.py checks), and
both servers order it the same way (bigint / Int64), so streams sorted by it
on either side can be merged. (PostgreSQL: ``('x' || substr(md5(u), 1, 16))::bit(64)::bigint``;
ClickHouse: ``reinterpretAsInt64(reverse(substring(MD5(u), 1, 8)))``.)

A bucket is the hash's top BUCKET_BITS bits. Two rows with the same unique_id
(an application's retry) land in the same bucket, so "distinct unique_ids" can
be counted bucket by bucket on each server. A bucket's checksum is the sum of
its distinct hashes modulo 2^64: independent of row order, and changed by any
single id missing or added.

Two distinct ids with the same 64-bit hash are counted as one on both sides; a
missing id can hide behind a present one only in that case (for n ids, a
chance of about n / 2^64 per missing id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

BUCKET_BITS: Final = 12
BUCKETS: Final = 1 << BUCKET_BITS
BUCKET_SHIFT: Final = 64 - BUCKET_BITS  # a bucket is (h >> BUCKET_SHIFT) & BUCKET_MASK, sign bits masked off
BUCKET_MASK: Final = BUCKETS - 1
MODULUS: Final = 1 << 64


def id_hash(unique_id: str | bytes) -> int:
    """h() in Python, for ids read from the slot."""
    data = unique_id.encode() if isinstance(unique_id, str) else unique_id
    return int.from_bytes(hashlib.md5(data, usedforsecurity=False).digest()[:8], "big", signed=True)


def bucket_of(h: int) -> int:
    return (h >> BUCKET_SHIFT) & BUCKET_MASK


def checksum(total: int) -> int:
    """A sum of signed hashes as the unsigned value modulo 2^64 (the two servers overflow differently)."""
    return int(total) % MODULUS


@dataclass(frozen=True, slots=True)
class StoredScope:
    """Which of the rows a sink holds are compared with the outbox (see cdc/sink/clickhouse/stored.py).

    In scope: rows claiming an outbox id at or past ``low_id``, and rows claiming none (id <= 0: no outbox
    row explains them; with ``since``, those committed since then); minus rows committed at or after
    ``snapshot_lsn`` (the outbox snapshot cannot see them), unless past ``upper_lsn`` (the server's position
    when the sink was read: no transaction wrote them).
    """

    low_id: int | None            # None: the outbox holds no row in scope
    snapshot_lsn: int
    since: int | None = None      # Unix seconds
    upper_lsn: int | None = None


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


Difference = Missing | Unexpected


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

"""The comparison's pure parts: bucket sums, differing buckets, and the merge of sorted hash streams."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import pytest

from cdc.core.reconcile import (
    MODULUS, Bucket, Missing, OrderError, Unexpected, bucket_of, checksum, chunks, differing, id_hash, merge, read_sums,
)

ids = st.lists(st.text(max_size=12), max_size=60)


def _sums(unique_ids: set[str]) -> dict[int, Bucket]:
    per: dict[int, list[int]] = {}
    for u in unique_ids:
        h = id_hash(u)
        per.setdefault(bucket_of(h), []).append(h)
    return read_sums((b, len(hs), sum(hs)) for b, hs in per.items())


def _outbox(rows: list[tuple[int, str]]) -> list[tuple[int, int, int, int]]:
    """(outbox id, unique_id) rows as the outbox side streams them: (h, id, created, partition) by (h, id)."""
    return sorted((id_hash(u), outbox_id, 1000 + outbox_id, 7) for outbox_id, u in rows)


def _clickhouse(in_scope: set[str], out_of_scope: set[str] = frozenset()) -> list[tuple[int, int, int]]:  # type: ignore[assignment]
    flags: dict[int, int] = {}
    for u in out_of_scope:
        flags[id_hash(u)] = 0
    for u in in_scope:
        flags[id_hash(u)] = 1
    return sorted((h, flag, 99) for h, flag in flags.items())


@given(outbox=ids, stored=ids)
def test_buckets_differ_exactly_where_the_id_sets_differ(outbox: list[str], stored: list[str]) -> None:
    pg, ch = _sums(set(outbox)), _sums(set(stored))
    changed = {bucket_of(id_hash(u)) for u in set(outbox) ^ set(stored)}
    assert set(differing(pg, ch)) == changed


@given(outbox=ids, stored=ids)
def test_merge_names_each_missing_and_unexpected_id_once(outbox: list[str], stored: list[str]) -> None:
    rows = list(enumerate(outbox + outbox[:3]))  # retries: the same unique_id again, later
    found = list(merge(_outbox(rows), _clickhouse(set(stored))))
    missing = {d.h for d in found if isinstance(d, Missing)}
    unexpected = {d.h for d in found if isinstance(d, Unexpected)}
    assert missing == {id_hash(u) for u in set(outbox) - set(stored)}
    assert unexpected == {id_hash(u) for u in set(stored) - set(outbox)}
    assert len(found) == len(missing) + len(unexpected)


def test_a_retry_is_reported_by_its_first_outbox_row() -> None:
    [missing] = merge(_outbox([(5, "a"), (9, "a")]), [])
    assert missing == Missing(id_hash("a"), 5, 1005, 7)


def test_an_id_clickhouse_holds_out_of_scope_accounts_for_the_outbox_row_but_is_never_unexpected() -> None:
    # "a" was delivered as outbox row 3, before the scope; its retry (row 12) is in scope.
    assert list(merge(_outbox([(12, "a")]), _clickhouse(set(), {"a"}))) == []
    assert list(merge([], _clickhouse(set(), {"b"}))) == []
    # ... also when it comes before an outbox row of its bucket, in the middle of the stream.
    top = (1 << 63) - 1
    assert list(merge([(top, 1, 0, 0)], _clickhouse(set(), {"b"}))) == [Missing(top, 1, 0, 0)]
    assert list(merge([], _clickhouse({"b"}))) == [Unexpected(id_hash("b"), 99)]


def test_unsorted_streams_are_refused() -> None:
    with pytest.raises(OrderError):
        list(merge([(5, 1, 0, 0), (3, 2, 0, 0)], []))
    with pytest.raises(OrderError):
        list(merge([], [(5, 1, 0), (5, 1, 0)]))


def test_checksums_are_sums_modulo_2_to_the_64() -> None:
    # PostgreSQL sums bigints exactly (numeric), ClickHouse wraps Int64: both mean the same.
    big = (1 << 63) - 1
    assert checksum(big + 5) == checksum(-(1 << 63) + 4) == (big + 5) % MODULUS
    assert read_sums([(3, 2, big + 5)]) == read_sums([(3, 2, -(1 << 63) + 4)])
    assert read_sums([(1, 0, 0)]) == {}


def test_chunks_keep_order_and_stay_under_the_limit() -> None:
    weights = {1: 5, 2: 5, 3: 20, 4: 1, 5: 1}
    assert chunks([1, 2, 3, 4, 5], weights.__getitem__, 10) == [[1, 2], [3], [4, 5]]
    assert chunks([], weights.__getitem__, 10) == []

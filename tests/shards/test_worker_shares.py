"""The share arithmetic of the worker group (no servers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cdc.workers.shares import preference, targets, to_release


def test_without_caps_every_share_is_the_ceiling_of_shards_over_workers() -> None:
    assert targets(8, {"a": None, "b": None, "c": None}) == {"a": 3, "b": 3, "c": 3}
    assert targets(8, {"a": None, "b": None}) == {"a": 4, "b": 4}
    assert targets(2, {"a": None, "b": None, "c": None}) == {"a": 1, "b": 1, "c": 1}
    assert targets(8, {}) == {}


def test_capped_workers_leave_the_rest_to_the_others() -> None:
    assert targets(8, {"a": 1, "b": None, "c": None}) == {"a": 1, "b": 4, "c": 4}
    assert targets(8, {"a": 1, "b": 2, "c": None}) == {"a": 1, "b": 2, "c": 5}
    assert targets(4, {"a": 0, "b": None}) == {"a": 0, "b": 4}


@given(st.integers(1, 64), st.lists(st.one_of(st.none(), st.integers(0, 70)), min_size=1, max_size=10))
def test_shares_cover_every_shard_when_the_caps_allow_and_never_exceed_a_cap(
    shards: int, caps: list[int | None]
) -> None:
    named = {f"w{i}": cap for i, cap in enumerate(caps)}
    got = targets(shards, named)
    capacity = sum(shards if c is None else min(c, shards) for c in caps)
    assert sum(got.values()) >= min(shards, capacity)
    for worker, cap in named.items():
        assert got[worker] <= (shards if cap is None else cap)
    if all(c is None for c in caps):
        assert set(got.values()) == {-(-shards // len(caps))}


def test_each_worker_tries_every_shard_once_in_its_own_rotation() -> None:
    orders = [preference(f"host:{pid}:ab", 8) for pid in range(20)]
    assert all(sorted(order) == list(range(8)) for order in orders)
    assert len({order[0] for order in orders}) > 1
    assert preference("x", 0) == []


def test_the_most_recently_taken_shards_are_handed_over_first() -> None:
    assert to_release(["s0", "s1", "s2", "s3"], 3) == ["s3"]
    assert to_release(["s0", "s1"], 3) == []
    assert to_release(["s0", "s1", "s2"], 0) == ["s0", "s1", "s2"]

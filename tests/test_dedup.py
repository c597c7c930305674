from __future__ import annotations

import math
import random
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.core.dedup import DedupWindow
from implementations import implementation  # noqa: F401 - the fixture

# Every test once per implementation of the window's insert (pure Python, compiled).
pytestmark = pytest.mark.usefixtures("implementation")

KEY = b"test-key-16bytes"


class ReferenceWindow:
    """The contract, written the obvious way: dict of first-seen times plus FIFO order."""

    def __init__(self, capacity: int, max_age: float) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self.seen: dict[str, float] = {}
        self.order: deque[str] = deque()
        self.last = -math.inf

    def expire(self, now: float) -> int:
        gone = 0
        while self.order and self.seen[self.order[0]] < now - self.max_age:
            del self.seen[self.order.popleft()]
            gone += 1
        return gone

    def admit(self, uid: str, now: float) -> bool:
        if self.capacity == 0:
            return True
        self.expire(now)
        # Times never go backwards inside the window: a clock step back
        # stamps new ids with the latest time already seen.
        self.last = max(self.last, now)
        if uid in self.seen:
            return False
        if len(self.order) == self.capacity:
            del self.seen[self.order.popleft()]
        self.seen[uid] = self.last
        self.order.append(uid)
        return True

    def admit_many(self, uids: Sequence[str], now: float) -> list[bool]:
        self.expire(now)  # a batch call expires even when it is empty
        return [self.admit(uid, now) for uid in uids]

    def contains(self, uid: str, now: float) -> bool:
        self.expire(now)
        return uid in self.seen


class CollidingWindow(DedupWindow):
    """Window whose fingerprints all land on a few home slots next to the end of
    the index, so probe chains are long and wrap around slot 0: the cases where
    backward-shift deletion goes wrong if it is going to."""

    def _fingerprint(self, unique_id: str) -> tuple[int, int]:  # type: ignore[override]
        n = int(unique_id)
        return n, (self._mask - n % 3) & self._mask

    def _fingerprints(self, unique_ids: Sequence[str]) -> tuple[list[int], list[int]]:  # type: ignore[override]
        pairs = [self._fingerprint(uid) for uid in unique_ids]
        return [lo for lo, _ in pairs], [hi for _, hi in pairs]


def check_index_consistent(w: DedupWindow) -> None:
    """Every remembered id is reachable from its home slot and the index holds nothing else."""
    assert sum(1 for p in w._index if p) == len(w)
    for k in range(len(w)):
        pos = (w._head + k) % w.capacity
        assert w._find(w._hi[pos], w._lo[pos]) == pos


# -- the contract --------------------------------------------------------------


def test_second_sighting_inside_window_is_a_duplicate() -> None:
    w = DedupWindow(capacity=10, max_age=60, key=KEY)
    assert w.admit("a", 0.0) is True
    assert w.admit("b", 1.0) is True
    assert w.admit("a", 2.0) is False
    assert len(w) == 2


def test_repeat_inside_one_batch_is_caught() -> None:
    w = DedupWindow(capacity=10, max_age=60, key=KEY)
    assert w.admit_many(["x", "y", "x", "z", "y"], 0.0) == [True, True, False, True, False]
    assert w.admit_many(["z", "w"], 1.0) == [False, True]


def test_duplicate_does_not_refresh_age() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    w.admit("a", 0.0)
    assert w.admit("a", 9.0) is False
    assert w.admit("a", 10.5) is True


def test_id_is_remembered_for_exactly_max_age_seconds() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    w.admit("a", 100.0)
    assert w.admit("a", 110.0) is False
    assert w.admit("a", 110.001) is True


def test_age_bound_forgets_oldest_first() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    w.admit("old", 0.0)
    w.admit("new", 5.0)
    assert w.expire(12.0) == 1
    assert len(w) == 1
    assert w.admit("new", 12.0) is False
    assert w.admit("old", 12.0) is True


def test_count_bound_forgets_oldest_first() -> None:
    w = DedupWindow(capacity=3, max_age=math.inf, key=KEY)
    assert w.admit_many(["a", "b", "c", "d"], 0.0) == [True] * 4
    assert len(w) == 3
    assert w.admit_many(["b", "c", "d"], 1.0) == [False] * 3
    assert w.admit("a", 1.0) is True  # "a" was the oldest and was pushed out


def test_oldest_id_arriving_when_full_is_still_a_duplicate() -> None:
    w = DedupWindow(capacity=3, max_age=math.inf, key=KEY)
    w.admit_many(["a", "b", "c"], 0.0)
    assert w.admit("a", 1.0) is False
    assert w.admit_many(["a"], 1.0) == [False]
    assert len(w) == 3


def test_clock_stepping_back_never_forgets_an_id_early() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    w.admit("a", 100.0)
    w.admit("b", 50.0)  # clock stepped back 50 s
    assert w.admit("b", 109.0) is False
    assert w.admit("b", 110.0) is False
    assert w.admit("b", 110.5) is True


def test_contains_looks_without_remembering() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    assert w.contains("a", 0.0) is False
    assert len(w) == 0
    w.admit("a", 0.0)
    assert w.contains("a", 5.0) is True
    assert w.contains("a", 11.0) is False


def test_remember_rebuilds_the_window_so_replayed_ids_are_duplicates() -> None:
    before = [str(uuid.uuid4()) for _ in range(1000)]
    w = DedupWindow(capacity=5000, max_age=3600, key=KEY)
    assert w.remember(iter(before), 0.0) == 1000
    assert w.admit_many(before, 1.0) == [False] * 1000
    assert w.admit("fresh", 1.0) is True


def test_remember_keeps_only_the_newest_ids_when_storage_holds_more_than_capacity() -> None:
    w = DedupWindow(capacity=3, max_age=math.inf, key=KEY)
    assert w.remember(["a", "b", "a", "c", "d"], 0.0) == 4
    assert len(w) == 3
    assert [w.contains(x, 0.0) for x in "abcd"] == [False, True, True, True]


def test_remember_with_seen_at_keeps_true_ages() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    w.remember(["ancient", "old", "recent"], 100.0, seen_at=[80.0, 92.0, 99.0])
    assert len(w) == 2  # "ancient" was already past max_age
    assert w.admit("ancient", 100.0) is True
    assert w.admit("old", 102.0) is False
    assert w.admit("old", 102.5) is True
    assert w.admit("recent", 109.0) is False


def test_remember_rejects_seen_at_of_the_wrong_length() -> None:
    w = DedupWindow(capacity=10, max_age=10, key=KEY)
    with pytest.raises(ValueError):
        w.remember(["a", "b"], 0.0, seen_at=[0.0])
    with pytest.raises(ValueError):
        w.remember(["a"], 0.0, seen_at=[0.0, 1.0])


def test_disabled_window_admits_everything_and_holds_nothing() -> None:
    w = DedupWindow(capacity=0, key=KEY)
    assert w.admit("a", 0.0) is True
    assert w.admit("a", 0.0) is True
    assert w.admit_many(["a", "a"], 0.0) == [True, True]
    assert w.remember(["a"], 0.0) == 0
    assert w.contains("a", 0.0) is False
    assert len(w) == 0
    assert w.nbytes() == 0


def test_empty_unique_id_is_rejected_rather_than_merging_events() -> None:
    w = DedupWindow(capacity=10, key=KEY)
    with pytest.raises(ValueError):
        w.admit("", 0.0)
    with pytest.raises(ValueError):
        w.admit_many(["a", ""], 0.0)


def test_any_string_is_an_id_even_lone_surrogates() -> None:
    w = DedupWindow(capacity=10, key=KEY)
    odd = ["\ud800", "é", "\x00", "x" * 10_000]
    assert w.admit_many(odd, 0.0) == [True] * 4
    assert [w.admit(x, 0.0) for x in odd] == [False] * 4
    assert w.admit_many(["ok", "\udfff"], 0.0) == [True, True]


@pytest.mark.parametrize(
    ("capacity", "max_age", "max_load"),
    [(-1, 1.0, 0.25), (2**32, 1.0, 0.25), (10, -1.0, 0.25), (10, math.nan, 0.25), (10, 1.0, 0.0), (10, 1.0, 0.9)],
)
def test_nonsense_bounds_are_rejected(capacity: int, max_age: float, max_load: float) -> None:
    with pytest.raises(ValueError):
        DedupWindow(capacity=capacity, max_age=max_age, max_load=max_load)


def test_windows_with_different_keys_agree() -> None:
    ids = [f"id-{i % 700}" for i in range(2000)]
    a = DedupWindow(capacity=500, max_age=math.inf, key=b"a")
    b = DedupWindow(capacity=500, max_age=math.inf)
    assert a.admit_many(ids, 0.0) == b.admit_many(ids, 0.0)


# -- exactness and memory ------------------------------------------------------


def test_no_false_drops_on_200k_distinct_random_ids() -> None:
    rng = random.Random(20240601)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(200_000)]
    assert len(set(ids)) == len(ids)
    w = DedupWindow(capacity=250_000, max_age=3600)
    assert w.admit_many(ids[:100_000], 0.0) == [True] * 100_000
    assert all(w.admit(x, 1.0) for x in ids[100_000:])
    assert len(w) == 200_000
    assert w.admit_many(ids, 2.0) == [False] * 200_000


def test_index_stays_exact_after_the_ring_wraps_many_times() -> None:
    w = DedupWindow(capacity=1000, max_age=5.0, key=KEY)
    for t in range(60):
        batch = [f"{t}-{i}" for i in range(700)]
        assert w.admit_many(batch, float(t)) == [True] * 700
        assert w.admit_many(batch[::7], float(t)) == [False] * 100
    check_index_consistent(w)
    assert len(w) == 1000
    assert w.admit_many([f"59-{i}" for i in range(700)], 59.0) == [False] * 700
    assert w.admit(f"58-{699}", 59.0) is False
    assert w.admit("58-0", 59.0) is True  # pushed out by the count bound


def test_memory_is_fixed_up_front_and_under_64_bytes_per_id() -> None:
    w = DedupWindow(capacity=1_000_000)
    before = w.nbytes()
    assert before / w.capacity <= 64
    w.admit_many([str(i) for i in range(50_000)], 0.0)
    assert w.nbytes() == before


def test_worst_case_capacity_just_past_a_power_of_two_stays_under_56_bytes_per_id() -> None:
    w = DedupWindow(capacity=2**16 + 1)
    assert w.nbytes() / w.capacity < 56


def test_denser_index_trades_speed_for_memory_with_the_same_answers() -> None:
    sparse = DedupWindow(capacity=10_000, key=KEY)
    dense = DedupWindow(capacity=10_000, key=KEY, max_load=0.75)
    assert dense.nbytes() < sparse.nbytes()
    ids = [f"id-{i % 15_000}" for i in range(40_000)]
    assert dense.admit_many(ids, 0.0) == sparse.admit_many(ids, 0.0)


# -- against the reference model -----------------------------------------------

ids = st.integers(min_value=0, max_value=40).map(str)
steps = st.one_of(
    st.tuples(st.just("admit"), ids),
    st.tuples(st.just("admit_many"), st.lists(ids, max_size=12)),
    st.tuples(st.just("contains"), ids),
    st.tuples(st.just("expire"), st.none()),
    st.tuples(st.just("remember"), st.lists(ids, max_size=12)),
)
# Mostly forward, sometimes standing still, now and then a step back.
clock_steps = st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 7.0, -3.0])


Program = list[tuple[tuple[str, Any], float]]


def run_against_reference(window: DedupWindow, capacity: int, max_age: float, program: Program) -> None:
    ref = ReferenceWindow(capacity, max_age)
    now = 1000.0
    for (op, arg), dt in program:
        now += dt
        if op == "admit":
            assert window.admit(arg, now) == ref.admit(arg, now)
        elif op == "admit_many":
            assert window.admit_many(arg, now) == ref.admit_many(arg, now)
        elif op == "contains":
            assert window.contains(arg, now) == ref.contains(arg, now)
        elif op == "expire":
            assert window.expire(now) == ref.expire(now)
        else:
            remembered = sum(ref.admit_many(arg, now)) if capacity else 0
            assert window.remember(arg, now) == remembered
            ref.expire(now)
        assert len(window) == len(ref.order)
    if capacity:
        check_index_consistent(window)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=0, max_value=12),
    max_age=st.sampled_from([0.0, 1.0, 5.0, 20.0, math.inf]),
    max_load=st.sampled_from([0.25, 0.75]),
    program=st.lists(st.tuples(steps, clock_steps), max_size=80),
)
def test_window_behaves_like_dict_and_deque(capacity: int, max_age: float, max_load: float, program: Program) -> None:
    window = DedupWindow(capacity=capacity, max_age=max_age, key=KEY, max_load=max_load)
    run_against_reference(window, capacity, max_age, program)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=12),
    max_age=st.sampled_from([1.0, 5.0, math.inf]),
    program=st.lists(st.tuples(steps, clock_steps), max_size=80),
)
def test_long_colliding_probe_chains_that_wrap_stay_exact(capacity: int, max_age: float, program: Program) -> None:
    window = CollidingWindow(capacity=capacity, max_age=max_age, key=KEY)
    run_against_reference(window, capacity, max_age, program)


def test_an_empty_batch_does_not_move_the_window_clock() -> None:
    window = DedupWindow(1, 0.0)
    window.admit_many([], 1000.0)
    window.admit("0", 997.0)
    assert not window.contains("0", 997.5)


def test_an_id_as_str_and_as_its_utf8_bytes_is_the_same_id() -> None:
    w = DedupWindow(capacity=10, max_age=60, key=KEY)
    assert w.admit_many([b"order-1", "caf\u00e9-2".encode()], 0.0) == [True, True]
    assert w.admit_many(["order-1", "caf\u00e9-2", "new"], 1.0) == [False, False, True]
    assert w.admit_many([b"new", "mixed", b"mixed"], 2.0) == [False, True, False]
    assert not w.admit("caf\u00e9-2", 3.0) and w.contains(b"order-1", 3.0)
    assert w.remember(["order-1", "other"], 4.0) == 1 and not w.admit(b"other", 4.0)

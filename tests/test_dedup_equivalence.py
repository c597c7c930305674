"""The compiled dedup insert leaves the window exactly as the pure-Python one does: answers, arrays and positions.

Two windows with the same key, one per implementation, run the same program
of batches (bytes ids, ASCII and other str ids, long ids, repeats, empty ids,
a clock that jumps and steps back, a count bound small enough to evict all the
time); after every step the answers, the exception if any, and every array
and position of the two tables must be equal.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdc.accel
from cdc.core.dedup import DedupWindow
from implementations import compiled_module

KEY = b"equivalence-key!"


def windows(capacity: int, max_age: float, max_load: float) -> tuple[DedupWindow, DedupWindow]:
    made = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        for native in (None, compiled_module()):
            monkeypatch.setattr(cdc.accel, "native", native)
            made.append(DedupWindow(capacity, max_age, key=KEY, max_load=max_load))
    assert made[0]._native is None and made[1]._native is not None
    return made[0], made[1]


def state(w: DedupWindow) -> tuple[Any, ...]:
    return (bytes(w._index), bytes(w._hi), bytes(w._lo), bytes(w._ts), w._head, w._count, w._last_ts)


def outcome(call: Any) -> object:
    try:
        return ("ok", call())
    except Exception as error:  # noqa: BLE001 - both must raise alike, if at all
        return (type(error).__name__, str(error))


ids = st.one_of(
    st.integers(min_value=0, max_value=60).map(lambda i: f"id-{i}".encode()),  # repeats: a small pool
    st.integers(min_value=0, max_value=60).map(lambda i: f"id-{i}"),  # the same ids as str
    st.sampled_from(["ü-id", "id-\ud800", b"x" * 300, "y" * 241, b"\xff\xfe", b"", ""]),
    st.binary(min_size=1, max_size=8),
)
batches = st.lists(st.tuples(st.lists(ids, max_size=30), st.floats(min_value=-5, max_value=50)), max_size=12)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=40), st.sampled_from([3.0, 1e9]), st.sampled_from([0.25, 0.75]), batches)
def test_every_batch_leaves_both_windows_alike(capacity: int, max_age: float, max_load: float,
                                               program: list[tuple[list[Any], float]]) -> None:
    python, compiled = windows(capacity, max_age, max_load)
    for batch, now in program:
        assert outcome(lambda: compiled.admit_many(list(batch), now)) == outcome(lambda: python.admit_many(list(batch), now))
        assert state(compiled) == state(python)


def test_the_compiled_insert_takes_bytes_and_ascii_ids_and_leaves_the_rest() -> None:
    _, compiled = windows(10, 1e9, 0.25)
    native = compiled._native
    assert native is not None

    def insert(batch: list[Any]) -> object:
        w = compiled
        return native.insert_ids(batch, w._salt, 1.0, w._index, w._hi, w._lo, w._ts, w._mask, w._capacity,
                                 w._head, w._count)

    assert insert([b"a", "b", b"a"]) == ([True, True, False], 0, 2)
    for other in (["ü"], ["a\ud800"], [b""], [""], [b"a", 1], [bytearray(b"a")]):
        assert insert(other) is None  # the reference's business: it encodes, or raises


def test_a_window_rebuilt_from_200k_str_ids_is_the_same_either_way() -> None:
    python, compiled = windows(200_000, 1e9, 0.25)
    rebuilt = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(200_000)]
    assert compiled.remember(rebuilt, 5.0) == python.remember(rebuilt, 5.0) == 200_000
    assert state(compiled) == state(python)


def test_inserting_keeps_no_memory() -> None:
    _, compiled = windows(100, 1e9, 0.25)
    batch: list[str | bytes] = [f"id-{i}".encode() for i in range(150)]
    batch += ["str-id", b"y" * 300, b"id-149"]  # evicting, and a repeat
    for _ in range(20):
        compiled.admit_many(batch, 1.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            compiled.admit_many(batch, 1.0)
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < 4096
    finally:
        tracemalloc.stop()
    counts = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(batch[0])
    for _ in range(2000):
        compiled.admit_many(batch, 1.0)
    assert (sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(batch[0])) == counts

"""The compiled converter for binary rows (``--binary``) gives what BinaryRowConverter's Python gives, row for row.

As tests/test_convert_equivalence.py does for text rows: hypothesis makes runs of
binary rows, well-formed ones as PostgreSQL sends them and every kind of wrong
value (NULLs, unchanged TOAST markers, integers and timestamps of the wrong
width, jsonb of another format version, payloads at the limit, timestamps at
and past the bounds and at infinity), converted one run after another by the
same converter, which shares strings between rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdc.accel
from cdc.core.outbox_binary import INT2, INT4, INT8, JSONB, TEXT, TIMESTAMP, TIMESTAMPTZ, UUID, BinaryRowConverter
from cdc.pgoutput.messages import UNCHANGED, Column, Relation, TupleData
from implementations import compiled_module, wire_tuple
from test_convert_equivalence import (
    ALPHABET, ODD_VALUES, as_transactions, odd_transactions, outcome, texts, transactions_outcome,
)

UTC = timezone.utc
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# The required columns in another order, plus one more: positions matter.
NAMES = ("created_at", "payload", "id", "occurred_at", "unique_id", "environment", "metadata_version", "event_type")
TYPES = {"created_at": TIMESTAMPTZ, "payload": JSONB, "id": INT8, "occurred_at": TIMESTAMPTZ, "unique_id": TEXT,
         "environment": TEXT, "metadata_version": INT4, "event_type": TEXT}
BOUNDS = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
LOW, HIGH = ((bound - PG_EPOCH) // timedelta(microseconds=1) for bound in BOUNDS)
MAX_PAYLOAD = 40


def relation(**types: int) -> Relation:
    merged = {**TYPES, **types}
    return Relation(None, 1, "public", "outbox", ord("d"), tuple(Column(0, name, merged[name], -1) for name in NAMES))


def converters(monkeypatch: pytest.MonkeyPatch, **types: int) -> tuple[BinaryRowConverter, BinaryRowConverter]:
    native = compiled_module()
    made = []
    for chosen in (None, native):
        monkeypatch.setattr(cdc.accel, "native", chosen)
        made.append(BinaryRowConverter(relation(**types), bounds=BOUNDS, max_payload_bytes=MAX_PAYLOAD))
    return made[0], made[1]


def be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big", signed=True)


# Microseconds from 2000-01-01: mostly inside BOUNDS, then each bound, one past it, infinity, and the int64 ends.
EDGE_MICROS = [LOW, LOW - 1, HIGH, HIGH + 1, 0, -1, 2**63 - 1, -(2**63), 2**62, -(2**62)]
micros = st.one_of(st.integers(LOW, HIGH), st.integers(-(2**63), 2**63 - 1), st.sampled_from(EDGE_MICROS))
timestamps = st.one_of(*[micros.map(lambda m: be(m, 8))] * 6, st.binary(max_size=9))
# Integers of each width PostgreSQL sends (int2, int4, int8), of widths it never sends, and at the Int32 ends.
integers = st.one_of(
    *[st.integers(-(2**15), 2**15 - 1).map(lambda v: be(v, 2))] * 2,
    *[st.integers(-(2**31), 2**31 - 1).map(lambda v: be(v, 4))] * 4,
    *[st.integers(-(2**63), 2**63 - 1).map(lambda v: be(v, 8))] * 4,
    st.sampled_from([be(2**31 - 1, 4), be(-(2**31), 4), be(2**31, 8), be(-(2**31) - 1, 8), be(7, 8), be(-7, 2)]),
    st.binary(max_size=9),
)
jsonb = st.one_of(
    *[st.text(ALPHABET, max_size=MAX_PAYLOAD // 2 + 2).map(lambda t: b"\x01" + t.encode())] * 6,
    st.sampled_from([b"", b"\x01", b"\x02{}", b"\x00{}", b"\x01" + b"x" * MAX_PAYLOAD, b"\x01" + b"x" * (MAX_PAYLOAD + 1)]),
)


def _value(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[object]:
    return st.one_of(*[strategy] * 9, st.sampled_from(ODD_VALUES))


@st.composite
def rows(draw: st.DrawFn) -> TupleData | Any:
    values = {
        "id": draw(_value(integers)), "unique_id": draw(_value(texts.map(str.encode))),
        "event_type": draw(_value(texts.map(str.encode))), "occurred_at": draw(_value(timestamps)),
        "environment": draw(_value(texts.map(str.encode))), "payload": draw(_value(jsonb)),
        "metadata_version": draw(_value(integers)), "created_at": draw(_value(timestamps)),
    }
    row = tuple(values[name] for name in NAMES)
    shape = draw(st.sampled_from(["tuple"] * 6 + ["wire"] * 2 + ["short", "long", "list"]))
    if shape == "wire":  # as the compiled decoders hand rows on
        return wire_tuple(row)
    if shape == "short":
        return row[:-1]
    if shape == "long":
        return (*row, b"extra")
    if shape == "list":
        return list(row)
    return row


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.lists(rows(), max_size=5), min_size=1, max_size=3), st.integers(min_value=0, max_value=2**40))
def test_runs_of_binary_rows_convert_alike(runs: list[list[Any]], first_seq: int) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        python, compiled = converters(monkeypatch)
    assert compiled._compiled is not None and python._compiled is None
    for run in runs:
        assert outcome(compiled, run, first_seq) == outcome(python, run, first_seq)  # type: ignore[arg-type]
        first_seq += len(run)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.lists(rows(), max_size=5), min_size=1, max_size=4))
def test_whole_transactions_of_binary_rows_convert_alike(runs: list[list[Any]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        python, compiled = converters(monkeypatch)
    tuples, txns = as_transactions(runs)
    assert transactions_outcome(compiled, tuples, txns) == transactions_outcome(python, tuples, txns)


def test_odd_calls_of_whole_binary_transactions_behave_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    python, compiled = converters(monkeypatch)
    for tuples, txns in odd_transactions(good_row(0)):
        assert transactions_outcome(compiled, tuples, txns) == transactions_outcome(python, tuples, txns)


def good_row(i: int, at: int = 0, version: bytes = be(1, 4), outbox_id: bytes = be(-42, 8)) -> TupleData:
    return (be(at, 8), b'\x01{"k": 1}', outbox_id, be(at, 8), f"u{i}".encode(), b"prod", version, b"t")


@pytest.mark.parametrize("at", EDGE_MICROS)
@pytest.mark.parametrize("width", [2, 4, 8])
def test_each_edge_timestamp_and_integer_width_converts_alike(monkeypatch: pytest.MonkeyPatch, at: int,
                                                               width: int) -> None:
    python, compiled = converters(monkeypatch)
    run = [good_row(0), good_row(1)]  # the strings now shared
    run += [good_row(2, at=at), good_row(3, version=be(-5, width), outbox_id=be(2**15 - 1, width))]
    assert outcome(compiled, run, 0) == outcome(python, run, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("types", [{"unique_id": UUID}, {"occurred_at": TIMESTAMP}, {"payload": TEXT},
                                   {"id": INT2, "metadata_version": INT8}])
def test_other_column_types_convert_alike_the_compiled_one_only_for_the_usual_outbox(
    monkeypatch: pytest.MonkeyPatch, types: dict[str, int]
) -> None:
    python, compiled = converters(monkeypatch, **types)
    usual = types == {"id": INT2, "metadata_version": INT8}
    assert (compiled._compiled is not None) == usual
    values = {"unique_id": b"U\x0e\x84\x00\xe2\x9bA\xd4\xa7\x16DfUD\x00\x00" if "unique_id" in types else b"u",
              "payload": b"{}" if "payload" in types else b"\x01{}",
              "id": be(3, 2 if usual else 8), "metadata_version": be(4, 8 if usual else 4)}
    row = tuple(values.get(name, good_row(0)[NAMES.index(name)]) for name in NAMES)
    assert outcome(compiled, [row, row], 0) == outcome(python, [row, row], 0)  # type: ignore[arg-type]


def test_plainly_fine_binary_rows_never_reach_the_reference() -> None:
    # Otherwise the comparisons above could pass with every row on the slow path.
    def refuse(*args: object) -> Any:
        raise AssertionError(f"the reference was asked about {args}")

    index = BinaryRowConverter(relation(), bounds=BOUNDS, max_payload_bytes=MAX_PAYLOAD)._index
    epoch = 946_684_800_000_000
    fast = compiled_module().Converter(index, len(NAMES), LOW + epoch, HIGH + epoch, MAX_PAYLOAD,
                                       {b"t": "t", b"prod": "prod"}, refuse, binary=True)
    run = [good_row(i, at=at, version=be(2**31 - 1, 4), outbox_id=be(-(2**63), 8))
           for i, at in enumerate((LOW, HIGH, 0, -1, 8_000_000_000_000_000))]
    rows, rejected = fast.convert_many(run, 5)
    assert rejected == [] and [row[2] - epoch for row in rows] == [LOW, HIGH, 0, -1, 8_000_000_000_000_000]
    assert rows[0] == (b"u0", "t", LOW + epoch, "prod", b'{"k": 1}', 2**31 - 1, -(2**63), 5)
    # The same rows as the compiled decoders hand them on: read where they lie, the same rows out.
    assert fast.convert_many([wire_tuple(values) for values in run], 5) == (rows, [])
    # And as whole transactions (positions from 0 in each), in one call.
    txns = [(2, 100, 7, 108), (0, 200, 8, 208), (len(run) - 2, 300, 9, 308)]
    assert fast.convert_transactions(run, txns) == (
        [r[:-1] + (0,) for r in rows[:1]] + [r[:-1] + (1,) for r in rows[1:2]]
        + [r[:-1] + (i,) for i, r in enumerate(rows[2:])], [(2, 100, 7), (len(run) - 2, 300, 9)], [])


def test_binary_bounds_beyond_what_the_compiled_comparison_holds_are_refused() -> None:
    with pytest.raises(ValueError, match="binary bounds"):
        compiled_module().Converter((0, 1, 2, 3, 4, 5, 6), 7, -(2**62), 0, 10, {}, lambda *a: ([], []), binary=True)


def test_a_null_or_unsent_value_in_any_column_converts_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    python, compiled = converters(monkeypatch)
    run = [good_row(0)]
    for at in range(len(NAMES)):
        run += [good_row(at)[:at] + (odd,) + good_row(at)[at + 1:] for odd in (None, UNCHANGED)]
    assert outcome(compiled, run, 0) == outcome(python, run, 0)  # type: ignore[arg-type]


def test_converting_binary_rows_keeps_no_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import sys
    import tracemalloc

    _, compiled = converters(monkeypatch)
    good = good_row(0)
    run = [good, good_row(1, version=be(2**31, 8)), good[:1] + (b"\x02{}",) + good[2:], good[:-1]]
    run += [wire_tuple(values) for values in run]  # the same rows as the compiled decoders hand them on
    shared = compiled.convert_many([good], 0)[0][0][3]  # "prod", the shared string the table holds
    for _ in range(100):
        compiled.convert_many(run, 0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            compiled.convert_many(run, 0)
            compiled.convert_transactions(run, [(2, 2**40, -5, 2**40 + 8), (len(run) - 2, 2**41, -6, 2**41 + 8)])
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < 4096
    finally:
        tracemalloc.stop()
    txns = [(2, 2**40, -5, 2**40 + 8), (0, 2**41, -6, 2**41 + 8), (len(run) - 2, 2**42, -7, 2**42 + 8)]
    held = (shared, None, *good, *run, *txns, *(x for txn in txns for x in txn if not -5 <= x <= 256))  # not cached
    counts = [sys.getrefcount(o) for o in held]
    for _ in range(2000):
        compiled.convert_many(run, 0)
        compiled.convert_transactions(run, txns)
    assert [sys.getrefcount(o) for o in held] == counts


def _cache_slot(value: bytes) -> int:
    """The compiled converter's cache slot for a shared string's bytes (FNV-1a, 256 slots)."""
    h = 2166136261
    for byte in value:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h & 255


def test_a_shared_string_outlives_the_cache_slot_it_came_from() -> None:
    # Three event types with one cache slot: the third's lookup takes the slot of the first, which the
    # table let go of (it is cleared when it grows too large). The row must keep its own reference.
    first, second, third = [name for name in (f"type-{i}".encode() for i in range(100_000))
                            if _cache_slot(name) == _cache_slot(b"type-0")][:3]
    strings = {first: first.decode() + "", second: "".join(["e", "nv"])}
    index = BinaryRowConverter(relation(), bounds=BOUNDS, max_payload_bytes=MAX_PAYLOAD)._index
    epoch = 946_684_800_000_000
    fast = compiled_module().Converter(index, len(NAMES), LOW + epoch, HIGH + epoch, MAX_PAYLOAD, strings,
                                       lambda *a: ([], []), binary=True)

    def row(event_type: bytes, environment: bytes) -> Any:
        values = list(good_row(0))
        values[NAMES.index("event_type")], values[NAMES.index("environment")] = event_type, environment
        return wire_tuple(values)

    assert fast.convert_many([row(first, second)], 0)[0][0][1] == first.decode()  # both now cached
    strings.clear()
    strings[third] = "".join(["th", "ird"])
    rows, _ = fast.convert_many([row(first, third)], 0)  # the first's text: held by its cache slot alone
    assert rows[0][1] == first.decode() and rows[0][3] == "third"

"""The compiled RowConverter.convert_many gives what the pure-Python reference gives, row for row and reason for reason.

Rows come from hypothesis: well-formed ones in PostgreSQL's output shapes, and
every kind of wrong value (NULLs, unchanged TOAST markers, bad UTF-8,
timestamps that are almost right, integers out of range, payloads at the
limit), in runs converted one after another by the same converter, since it
keeps state between rows (the last timestamp, the shared strings).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdc.accel
from cdc.core.outbox import RowConverter
from cdc.pgoutput.messages import UNCHANGED, Column, Relation, TupleData
from implementations import compiled_module, wire_tuple

UTC = timezone.utc
# The required columns in another order, plus one more: positions matter.
NAMES = ("created_at", "payload", "id", "occurred_at", "unique_id", "environment", "metadata_version", "event_type")
OUTBOX = Relation(None, 1, "public", "outbox", ord("d"), tuple(Column(0, name, 25, -1) for name in NAMES))
BOUNDS = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
MAX_PAYLOAD = 40


def converters(monkeypatch: pytest.MonkeyPatch) -> tuple[RowConverter, RowConverter]:
    native = compiled_module()
    made = []
    for chosen in (None, native):
        monkeypatch.setattr(cdc.accel, "native", chosen)
        made.append(RowConverter(OUTBOX, bounds=BOUNDS, max_payload_bytes=MAX_PAYLOAD))
    return made[0], made[1]


def _typed(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    return ("UNCHANGED",) if value is UNCHANGED else (type(value).__name__, value)


def outcome(converter: RowConverter, tuples: list[Any], first_seq: int) -> object:
    try:
        rows, rejected = converter.convert_many(tuples, first_seq)
    except Exception as error:  # noqa: BLE001 - both must raise alike, if at all
        return (type(error).__name__, str(error))
    return [_typed(r) for r in rows], [_typed(r) for r in rejected]


def pg_timestamp(moment: datetime, offset_minutes: int, colon: bool) -> str:
    """As PostgreSQL prints a timestamptz: fraction without trailing zeros, offset as +HH or +HH:MM."""
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond:06d}".rstrip("0")
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return text + f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes or colon else "")


moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
good_at = st.builds(pg_timestamp, moments, st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59), st.booleans())


def _broken(text: str, rng: random.Random) -> str:
    at = rng.randrange(len(text) + 1)
    char = rng.choice("0123456789-:+. TZ,x\u00e9")
    how = rng.choice(["replace", "cut", "insert"])
    if how == "replace":
        return text[:at] + char + text[at + 1:]
    if how == "cut":
        return text[:at]
    return text[:at] + char + text[at:]


def _pool(n: int, *, broken: float = 0.3, start: datetime = datetime(1, 1, 2, tzinfo=UTC), years: int = 9997) -> list[str]:
    """Timestamps for the row tests, made once: well-formed in every offset shape, and nearly so."""
    rng = random.Random(15)
    out = []
    for _ in range(n):
        moment = start + timedelta(microseconds=rng.randrange(years * 31_536_000_000_000))
        text = pg_timestamp(moment, rng.randrange(-23 * 60 - 59, 23 * 60 + 60), rng.random() < 0.3)
        out.append(_broken(text, rng) if rng.random() < broken else text)
    return out


# Each nearly right in one way the parser must notice (or right at a bound).
EDGE_TIMESTAMPS = [
    "infinity", "-infinity", "2024-02-29 00:00:00+00", "2023-02-29 00:00:00+00", "2024-04-31 10:00:00+00",
    "0000-01-01 00:00:00+00", "10000-01-01 00:00:00+00", "2024-05-01 24:00:00+00", "2024-05-01 12:00:60+00",
    "2024-05-01 12:00:00+24", "2024-05-01 12:00:00+23:60", "2024-05-01 12:00:00.1234567+00",
    "2024-05-01 12:00:00.+00", "2024-05-01T12:00:00+00", "2024-05-01 12:00:00Z", "2024-05-01 12:00:00",
    "2024-05-01 12:00:00+0530", "2024-05-01 12:00:00+05:30:15", "1899-12-31 23:59:59.999999+00",
    "2299-12-31 23:59:59.999999+00", "2300-01-01 00:00:00+00", "1900-01-01 00:00:00+00:01",
    "\u0662024-05-01 12:00:00+00",
    "1900-02-29 12:00:00+00", "2000-02-29 12:00:00+00", "2100-02-28 23:59:59.999999-23:59",
]
EDGE_INTEGERS = [
    "", "-", "+5", " 5", "5 ", "5_0", "007", "-0", "1e3", "0x10", "\u0665", "99999999999999999999", "2147483647",
    "2147483648", "-2147483648", "-2147483649", "999999999999999999", "-999999999999999999", "1000000000000000000",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808",
]
timestamps = st.one_of(
    st.sampled_from(_pool(3000, start=datetime(1850, 1, 1, tzinfo=UTC), years=500)),  # mostly within BOUNDS
    st.sampled_from(EDGE_TIMESTAMPS),
)
integers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.integers(min_value=-(2**31) - 2, max_value=2**31 + 1).map(str),
    st.sampled_from(EDGE_INTEGERS),
)
# An explicit alphabet: hypothesis' full Unicode table takes seconds to build the first time.
ALPHABET = "ab.\"{}:, \x00é✓\U0001f600"
texts = st.one_of(st.sampled_from(["order.created", "user.signed_up", "production", "", "é"]), st.text(ALPHABET, max_size=6))


ODD_VALUES = [None, UNCHANGED, b"\xff", b"a\xc3", b"\xed\xa0\x80", "a str, not bytes", 1]


def _value(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """Mostly the UTF-8 of a text, so that whole rows are often fine; sometimes NULL, UNCHANGED, bad UTF-8..."""
    return st.one_of(*[strategy.map(str.encode)] * 9, st.sampled_from(ODD_VALUES))


@st.composite
def rows(draw: st.DrawFn) -> TupleData | Any:
    values = {
        "id": draw(_value(integers)), "unique_id": draw(_value(st.one_of(st.uuids().map(str), texts))),
        "event_type": draw(_value(texts)), "occurred_at": draw(_value(timestamps)),
        "environment": draw(_value(texts)), "payload": draw(_value(st.text(ALPHABET, max_size=MAX_PAYLOAD // 2 + 2))),
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
def test_runs_of_rows_convert_alike(runs: list[list[Any]], first_seq: int) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        python, compiled = converters(monkeypatch)
    assert compiled._compiled is not None and python._compiled is None
    for run in runs:
        assert outcome(compiled, run, first_seq) == outcome(python, run, first_seq)
        first_seq += len(run)


def transactions_outcome(converter: Any, tuples: Any, txns: Any) -> object:
    """convert_transactions' result with the type of everything in it, or the exception raised."""
    try:
        rows, commits, rejections = converter.convert_transactions(tuples, txns)
    except Exception as error:  # noqa: BLE001 - both must raise alike, if at all
        return (type(error).__name__, str(error))
    return ([_typed(r) for r in rows], [_typed(c) for c in commits],
            [(_typed(lsn), _typed(time), [_typed(r) for r in rejected]) for lsn, time, rejected in rejections])


def as_transactions(runs: list[list[Any]]) -> tuple[list[Any], list[tuple[int, int, int, int]]]:
    """Runs of rows as one group of whole transactions: their rows in order, and each (rows, LSNs, time)."""
    return [row for run in runs for row in run], [(len(run), 100 * i, -i, 100 * i + 8) for i, run in enumerate(runs)]


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.lists(rows(), max_size=5), min_size=1, max_size=4))
def test_whole_transactions_convert_alike(runs: list[list[Any]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        python, compiled = converters(monkeypatch)
    tuples, txns = as_transactions(runs)
    assert transactions_outcome(compiled, tuples, txns) == transactions_outcome(python, tuples, txns)


def odd_transactions(good: tuple[bytes, ...]) -> list[tuple[Any, Any]]:
    """Calls the decoder never makes: the compiled converter hands each to the reference."""
    return [
        ([good], [(1, 1, 2)]), ([good], [[1, 1, 2, 3]]), ([good], [(-1, 1, 2, 3)]), ([good], [(2, 1, 2, 3)]),
        ([good, good], [(1, 1, 2, 3), (2, 4, 5, 6)]), ([good], [(1.0, 1, 2, 3)]), ([good], [(True, 1, 2, 3)]),
        ([good], [(2**70, 1, 2, 3)]), ((good,), [(1, 1, 2, 3)]), ([good], ((1, 1, 2, 3),)), ([good], None),
        ([None, good], [(2, 1, 2, 3)]), ([], []), ([good], []), ([good, good], [(0, 1, 2, 3), (2, 4, 5, 6)]),
    ]


def test_odd_calls_of_whole_transactions_behave_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    python, compiled = converters(monkeypatch)
    good = (b"", b"{}", b"1", b"2024-05-01 12:00:00+00", b"u", b"prod", b"1", b"t")
    for tuples, txns in odd_transactions(good):
        assert transactions_outcome(compiled, tuples, txns) == transactions_outcome(python, tuples, txns)


@settings(max_examples=200)
@given(st.lists(good_at, min_size=1, max_size=20))
def test_well_formed_timestamps_give_the_microseconds_the_reference_gives(texts_: list[str]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        python, compiled = converters(monkeypatch)
    run = [(b"", b"{}", b"1", at.encode(), f"u{i}".encode(), b"prod", b"1", b"t") for i, at in enumerate(texts_)]
    expected = outcome(python, run, 0)
    assert outcome(compiled, run, 0) == expected
    assert outcome(compiled, run, 0) == expected  # again: every string now shared, every row on the fast path


@pytest.mark.parametrize("at", EDGE_TIMESTAMPS)
def test_each_nearly_right_timestamp_converts_alike(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    python, compiled = converters(monkeypatch)
    run = [(b"", b"{}", b"1", b"2024-05-01 12:00:00+00", b"u", b"prod", b"1", b"t")] * 2  # the strings now shared
    run.append((b"", b"{}", b"1", at.encode(), b"v", b"prod", b"1", b"t"))
    assert outcome(compiled, run, 0) == outcome(python, run, 0)


@pytest.mark.parametrize("number", EDGE_INTEGERS)
def test_each_nearly_right_integer_converts_alike(monkeypatch: pytest.MonkeyPatch, number: str) -> None:
    python, compiled = converters(monkeypatch)
    good = (b"", b"{}", b"1", b"2024-05-01 12:00:00+00", b"u", b"prod", b"1", b"t")
    run = [good, good[:2] + (number.encode(),) + good[3:], good[:6] + (number.encode(),) + good[7:]]
    assert outcome(compiled, run, 0) == outcome(python, run, 0)


def test_odd_calls_behave_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    python, compiled = converters(monkeypatch)
    good = (b"", b"{}", b"1", b"2024-05-01 12:00:00+00", b"u", b"prod", b"1", b"t")
    for tuples, first_seq in [
        ([], 0), ((good,), 0), (iter([good]), 0), ([good], -1), ([good], 2**70), ([good], 1.0), ([good], True),
        (None, 0), ([None], 0), ([good, 5], 0),
    ]:
        tuples_again = iter([good]) if not isinstance(tuples, (list, tuple, type(None))) else tuples
        assert outcome(compiled, tuples_again, first_seq) == outcome(python, tuples, first_seq)  # type: ignore[arg-type]


def test_plainly_fine_rows_never_reach_the_reference() -> None:
    # Otherwise the comparisons above could pass with every row on the slow path.
    def refuse(*args: object) -> Any:
        raise AssertionError(f"the reference was asked about {args}")

    index = RowConverter(OUTBOX, bounds=BOUNDS, max_payload_bytes=MAX_PAYLOAD)._index
    low, high = (int((b - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) for b in BOUNDS)
    fast = compiled_module().Converter(index, len(NAMES), low, high, MAX_PAYLOAD, {b"t": "t", b"prod": "prod"}, refuse)
    good = _pool(3000, broken=0, start=datetime(1900, 1, 2, tzinfo=UTC), years=398)
    run = [(b"", b"{}", b"-42", at.encode(), b"u", b"prod", b"2147483647", b"t") for at in good]
    rows, rejected = fast.convert_many(run, 5)
    assert len(rows) == len(good) > 1000 and rejected == []
    assert rows[0][1:] == ("t", rows[0][2], "prod", b"{}", 2147483647, -42, 5)
    # The same rows as the compiled decoders hand them on: read where they lie, the same rows out.
    assert fast.convert_many([wire_tuple(values) for values in run], 5) == (rows, [])
    # And as whole transactions (positions from 0 in each), in one call.
    txns = [(2, 100, 7, 108), (0, 200, 8, 208), (len(run) - 2, 300, 9, 308)]
    assert fast.convert_transactions(run, txns) == (
        [r[:-1] + (0,) for r in rows[:1]] + [r[:-1] + (1,) for r in rows[1:2]]
        + [r[:-1] + (i,) for i, r in enumerate(rows[2:])], [(2, 100, 7), (len(run) - 2, 300, 9)], [])


def test_converting_keeps_no_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import sys
    import tracemalloc

    _, compiled = converters(monkeypatch)
    good = (b"", b"{}", b"1", b"2024-05-01 12:00:00.5+00", b"u", b"prod", b"1", b"t")
    run = [good, good[:3] + (b"2024-05-02 12:00:00+02",) + good[4:], good[:4] + (b"",) + good[5:], good[:-1]]
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

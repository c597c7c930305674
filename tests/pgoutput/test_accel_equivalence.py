"""The compiled Insert decoding gives what the pure-Python reference gives: the same rows, the same errors.

Every comparison is of outcomes: the result with the type of every value, or
the exception's type, message, offset, reason and message type. Inputs are
the captured messages, every truncation of them at every offset, and
hypothesis' tuples, corruptions and odd calls (wrong types, negative offsets).
"""

from __future__ import annotations

from struct import pack
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cdc.pgoutput import UNCHANGED, PgOutputError
from implementations import InsertDecoding, insert_decoding

from .captures import all_messages

HEADER = b"w" + bytes(range(24))
MESSAGES = [raw for raw, in_stream, _ in all_messages() if not in_stream]
INSERTS = [raw for raw in MESSAGES if raw[:1] == b"I"]


@pytest.fixture(scope="module")
def both() -> tuple[InsertDecoding, InsertDecoding]:
    return insert_decoding("python"), insert_decoding("compiled")


def _value(value: object) -> object:
    return ("UNCHANGED",) if value is UNCHANGED else (type(value).__name__, value)


def _shape(result: Any) -> object:
    """A result with the type of everything in it: b"1" and "1", 1 and True must not compare equal."""
    if len(result) == 3:  # insert_run_at: (relation OID, tuples, next index)
        rid, run, after = result
        return (type(rid).__name__, rid, [tuple(map(_value, values)) for values in run], type(after).__name__, after)
    rid, values = result
    return (type(rid).__name__, rid, type(values).__name__, tuple(map(_value, values)))


def outcome(call: Any, *args: object) -> tuple[Any, ...]:
    try:
        return ("ok", _shape(call(*args)))
    except PgOutputError as error:
        return ("PgOutputError", str(error), error.offset, error.reason, error.message_type)
    except Exception as error:  # noqa: BLE001 - the point is that both raise the same
        return (type(error).__name__, str(error))


def assert_same_at(both: tuple[InsertDecoding, InsertDecoding], buf: object, offset: object) -> tuple[Any, ...]:
    python, compiled = both
    expected = outcome(python.decode_insert_at, buf, offset)
    assert outcome(compiled.decode_insert_at, buf, offset) == expected
    return expected


def assert_same_runs(
    both: tuple[InsertDecoding, InsertDecoding], frames: object, start: object, offset: object
) -> tuple[Any, ...]:
    """``frames`` may be a function that makes them (a released memoryview cannot be made twice)."""
    python, compiled = both
    make = frames if callable(frames) else lambda: frames
    expected = outcome(python.insert_run_at, make(), start, offset)
    assert outcome(compiled.insert_run_at, make(), start, offset) == expected
    return expected


def insert(relation_id: int, values: list[tuple[bytes, bytes | None]]) -> bytes:
    """An Insert message; each value is (kind byte, its bytes for 't'/'b' or None)."""
    body = b"".join(kind + (b"" if data is None else pack(">I", len(data)) + data) for kind, data in values)
    return b"I" + pack(">I", relation_id) + b"N" + pack(">H", len(values)) + body


# -- captured messages --------------------------------------------------------------------------


def test_every_captured_message_in_its_frame_decodes_alike(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    results = [assert_same_at(both, HEADER + raw, len(HEADER)) for raw in MESSAGES]
    assert sum(1 for r in results if r[0] == "ok") == len(INSERTS) > 10
    assert sum(1 for r in results if r[0] == "PgOutputError") == len(MESSAGES) - len(INSERTS) > 0


def test_every_truncation_of_every_captured_insert_fails_alike(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    # Each cut is a buffer that really ends there: a read past the end would see
    # other memory, not a neighbouring byte of the same bytes object.
    for raw in INSERTS:
        for cut in range(len(raw)):
            result = assert_same_at(both, HEADER + raw[:cut], len(HEADER))
            assert result[0] == "PgOutputError"
            assert_same_at(both, raw[:cut], 0)


def test_every_extension_of_a_captured_insert_fails_alike(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    for raw in INSERTS:
        for junk in (b"\x00", b"n", b"t\x00\x00\x00\x00", raw):
            assert assert_same_at(both, HEADER + raw + junk, len(HEADER))[0] == "PgOutputError"


def test_runs_through_every_captured_message_decode_alike(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    # Every message of every capture in its frame, a keepalive now and then: a run from every Insert.
    frames: list[bytes | memoryview] = []
    for i, raw in enumerate(MESSAGES):
        frames.append(HEADER + raw if i % 3 else memoryview(HEADER + raw))
        if i % 7 == 0:
            frames.append(b"k" + bytes(17))
    starts = [i for i, f in enumerate(frames) if f[0] == HEADER[0] and f[len(HEADER)] == ord("I")]
    assert len(starts) == len(INSERTS)
    for start in starts:
        assert assert_same_runs(both, frames, start, len(HEADER))[0] == "ok"
    inserts = [HEADER + raw for raw in INSERTS]
    assert assert_same_runs(both, inserts, 0, len(HEADER))[0] == "ok"
    inserts = [HEADER + INSERTS[0]] * 5  # one relation's: the run reaches whatever comes fourth
    failed = 0
    for raw in MESSAGES:
        if raw[:1] == b"I":
            continue
        # Another message ends a run; relabelled as an Insert it fails the run alike (an
        # Update without an old tuple is laid out as an Insert, and reads as one).
        ended = assert_same_runs(both, [*inserts[:3], HEADER + raw, *inserts[3:]], 0, len(HEADER))
        assert ended[0] == "ok" and ended[1][-1] == 3
        relabelled = assert_same_runs(both, [*inserts[:3], HEADER + b"I" + raw[1:], *inserts[3:]], 0, len(HEADER))
        failed += relabelled[0] == "PgOutputError"
    assert failed > 10


# -- edge cases the fast path must get exactly right --------------------------------------------


@pytest.mark.parametrize("values", [
    [],
    [(b"t", b"")],
    [(b"b", b"\x00\x01")],
    [(b"n", None), (b"u", None), (b"t", b"x" * 70_000)],
    [(b"t", bytes(range(256)))] * 40,
])
def test_well_formed_tuples_decode_alike(
    both: tuple[InsertDecoding, InsertDecoding], values: list[tuple[bytes, bytes | None]]
) -> None:
    raw = insert(16384, values)
    assert assert_same_at(both, HEADER + raw, len(HEADER))[0] == "ok"


@pytest.mark.parametrize("tail", [
    b"t\xff\xff\xff\xff",  # length -1
    b"t\x80\x00\x00\x00",  # the most negative length
    b"t\x7f\xff\xff\xff",  # the largest positive length, far past the end
    b"t\x00\x00\x00\x02x",  # one byte short
    b"t\x00\x00",  # the length cut short
    b"x",  # an unknown kind
    b"",  # the column missing
])
def test_broken_last_columns_fail_alike(both: tuple[InsertDecoding, InsertDecoding], tail: bytes) -> None:
    raw = b"I" + pack(">I", 7) + b"N" + pack(">H", 2) + b"n" + tail
    assert assert_same_at(both, HEADER + raw, len(HEADER))[0] == "PgOutputError"


@pytest.mark.parametrize(("buf", "offset"), [
    (HEADER + b"I", len(HEADER)),
    (b"", 0),
    (b"I\x00\x00\x00\x01N\x00\x00", -8),  # negative offsets count from the end in the reference
    (b"xxI\x00\x00\x00\x01N\x00\x00", -8),
    (b"I\x00\x00\x00\x01N\x00\x00", 9),  # past the end
    (b"I\x00\x00\x00\x01N\x00\x00", 1 << 70),
    (b"I\x00\x00\x00\x01N\x00\x00", True),
    (b"I\x00\x00\x00\x01N\x00\x00", 0.0),
    (b"I\x00\x00\x00\x01N\x00\x00", "0"),
    (bytearray(b"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x01a"), 0),  # not bytes: the reference's business
    (memoryview(b"I\x00\x00\x00\x01N\x00\x00"), 0),
    ("I\x00\x00\x00\x01N\x00\x00", 0),
    (None, 0),
])
def test_odd_calls_behave_alike(both: tuple[InsertDecoding, InsertDecoding], buf: object, offset: object) -> None:
    assert_same_at(both, buf, offset)


GOOD = HEADER + b"I\x00\x00\x00\x01N\x00\x00"
ANOTHER = HEADER + b"I\x00\x00\x00\x02N\x00\x00"


def _released() -> list[object]:
    view = memoryview(GOOD)
    view.release()
    return [GOOD, view]


@pytest.mark.parametrize(("frames", "start", "offset"), [
    ([], 0, 25),
    ([GOOD], 1, 25),
    ([GOOD], -1, 25),  # a negative start counts from the end in the reference
    ([GOOD, GOOD], 1 << 70, 25),
    ([GOOD], 0, 1 << 70),
    ([GOOD], 0, -1),
    ([GOOD], 0, None),
    ([GOOD], True, 25),
    ((GOOD, GOOD), 0, 25),  # a tuple, not a list
    ([GOOD, b""], 0, 25),  # an empty frame: the reference's IndexError
    ([GOOD, bytearray(GOOD)], 0, 25),
    ([bytearray(GOOD), GOOD], 0, 25),
    ([GOOD, "w" * 40], 0, 25),
    ([GOOD, 3], 0, 25),
    ([GOOD, None], 0, 25),
    ([GOOD, memoryview(b"xx" + GOOD)[2:]], 0, 25),
    ([GOOD, memoryview(GOOD + GOOD)[::2]], 0, 25),  # not contiguous
    ([GOOD, memoryview(GOOD + bytes(3)).cast("I")], 0, 25),  # four-byte items
    ([GOOD, memoryview(GOOD).cast("b")], 0, 25),  # signed bytes
    (_released, 0, 25),
    ([GOOD, GOOD[:26]], 0, 25),  # cut after the type byte
    ([GOOD, GOOD[:25]], 0, 25),  # no message at all
    ([GOOD, ANOTHER, GOOD], 0, 25),
    ([GOOD, HEADER + b"I\x00\x00\x00\x02", GOOD], 0, 25),  # the next relation's Insert is broken
    ([HEADER + b"U\x00\x00\x00\x01N\x00\x00"], 0, 25),  # not an Insert at the start
    (None, 0, 25),
])
def test_odd_runs_behave_alike(
    both: tuple[InsertDecoding, InsertDecoding], frames: object, start: object, offset: object
) -> None:
    assert_same_runs(both, frames, start, offset)


# -- hypothesis ---------------------------------------------------------------------------------

column = st.one_of(
    st.tuples(st.sampled_from([b"t", b"b"]), st.binary(max_size=40)),
    st.tuples(st.sampled_from([b"n", b"u"]), st.none()),
)
relation_ids = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A well-formed Insert, or a captured one, then perhaps cut, overwritten, grown or shrunk somewhere."""
    raw = draw(st.one_of(st.sampled_from(INSERTS), st.builds(insert, relation_ids, st.lists(column, max_size=12))))
    how = draw(st.sampled_from(["none", "cut", "overwrite", "insert", "delete", "append"]))
    at = draw(st.integers(min_value=0, max_value=len(raw)))
    junk = draw(st.binary(min_size=1, max_size=6))
    if how == "cut":
        return raw[:at]
    if how == "overwrite":
        return raw[:at] + junk + raw[at + len(junk):]
    if how == "insert":
        return raw[:at] + junk + raw[at:]
    if how == "delete":
        return raw[:at] + raw[at + len(junk):]
    if how == "append":
        return raw + junk
    return raw


@settings(max_examples=400)
@given(mutated())
@example(b"I\x00\x00\x00\x01N\x00\x01t\xff\xff\xff\xff")
def test_mutated_inserts_decode_alike(raw: bytes) -> None:
    both = insert_decoding("python"), insert_decoding("compiled")
    assert_same_at(both, HEADER + raw, len(HEADER))
    assert_same_at(both, raw, 0)


others = st.sampled_from([b"k" + bytes(17), HEADER + b"C" + bytes(25), HEADER + b"B" + bytes(20), b"", b"w"])


@settings(max_examples=150)
@given(st.lists(st.one_of(st.tuples(mutated(), st.booleans()), st.tuples(others, st.just(False))), min_size=1,
                max_size=20),
       st.integers(min_value=0, max_value=19), st.sampled_from([0, 1, 25, 26, 40]))
def test_mutated_runs_decode_alike(frames: list[tuple[bytes, bool]], start: int, offset: int) -> None:
    both = insert_decoding("python"), insert_decoding("compiled")
    prefix = HEADER[:offset] + bytes(max(0, offset - len(HEADER)))
    run = [memoryview(prefix + raw) if as_view else prefix + raw for raw, as_view in frames]
    assert_same_runs(both, run, min(start, len(run) - 1), offset)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(min_value=-70, max_value=70))
def test_arbitrary_bytes_at_any_offset_decode_alike(raw: bytes, offset: int) -> None:
    both = insert_decoding("python"), insert_decoding("compiled")
    assert_same_at(both, raw, offset)
    assert_same_at(both, b"I" + raw, offset)

"""The compiled ``transactions_at`` finds what the pure-Python reference finds: the same group, to the type.

Inputs are streams of whole, cut, mixed and broken transactions with keepalives
between them (hypothesis), every captured message in a transaction's place, and
odd calls. The outcome compared is the whole result, every value with its
type, or the exception the reference raises.
"""

from __future__ import annotations

from struct import pack
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.pgoutput import UNCHANGED, Begin, Commit, Insert
from implementations import InsertDecoding, insert_decoding, is_wire_tuple

from .captures import all_messages
from .encoder import encode
from .leaks import assert_refcounts_kept, leaked

HEADER = b"w" + bytes(range(24))
OFFSET = len(HEADER)
LIMIT = 4
CAPTURED = [raw for raw, in_stream, _ in all_messages() if not in_stream]


def begin(lsn: int) -> bytes:
    return HEADER + encode(Begin(lsn, -lsn, 7))


def commit(lsn: int) -> bytes:
    return HEADER + encode(Commit(0, lsn, lsn + 8, 1))


def insert(relation_id: int, value: bytes) -> bytes:
    return HEADER + encode(Insert(None, relation_id, (value, None, UNCHANGED)))


def keepalive(wal_end: int, reply: int) -> bytes:
    return b"k" + pack(">QqB", wal_end, -(wal_end % 1000), reply)


def _value(value: object) -> object:
    return ("UNCHANGED",) if value is UNCHANGED else (type(value).__name__, value)


def _shaped(value: Any) -> object:
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shaped(v) for v in value])
    if is_wire_tuple(value):  # the compiled decoder's rows: the tuple each stands for
        return _shaped(tuple(value))
    return _value(value)


def outcome(call: Any, *args: object) -> tuple[Any, ...]:
    try:
        return ("ok", _shaped(call(*args)))
    except Exception as error:  # noqa: BLE001 - the point is that both raise the same
        return (type(error).__name__, str(error))


@pytest.fixture(scope="module")
def both() -> tuple[InsertDecoding, InsertDecoding]:
    return insert_decoding("python"), insert_decoding("compiled")


def assert_same(both: tuple[InsertDecoding, InsertDecoding], frames: object, *args: object) -> tuple[Any, ...]:
    python, compiled = both
    expected = outcome(python.transactions_at, frames, *args)
    assert outcome(compiled.transactions_at, frames, *args) == expected
    return expected


def test_whole_transactions_and_their_keepalives_come_as_one_group(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    frames = [begin(100), insert(1, b"a"), insert(1, b"b"), commit(100), keepalive(108, 1), keepalive(109, 0),
              begin(200), commit(200), begin(300), memoryview(insert(1, b"c")), commit(300), keepalive(308, 0),
              begin(400), insert(2, b"d"), commit(400)]
    for implementation in both:
        relation_id, tuples, txns, seen, done = implementation.transactions_at(frames, 0, OFFSET, LIMIT)
        assert relation_id == 1 and done == 11  # the fourth transaction is another relation's
        assert tuples == [(b"a", None, UNCHANGED), (b"b", None, UNCHANGED), (b"c", None, UNCHANGED)]
        assert txns == [(2, 100, -100, 108), (0, 200, -200, 208), (1, 300, -300, 308)]
        assert seen == (109, -109, True)  # the last position; a reply, since one asked; 308's not taken
    assert assert_same(both, frames, 0, OFFSET, LIMIT)[0] == "ok"


def test_the_compiled_path_takes_well_formed_groups_itself() -> None:
    from cdc.pgoutput import _groups, _tuples
    from implementations import compiled_module

    asked: list[int] = []

    def reference(frames: Any, start: int, offset: int, limit: int) -> Any:
        asked.append(start)
        return _groups.transactions_at(frames, start, offset, limit)

    decoder = compiled_module().InsertDecoder(UNCHANGED, _tuples.decode_insert_at, _tuples.insert_run_at, reference)
    frames = [begin(1), insert(1, b"a"), memoryview(commit(1)), keepalive(9, 0), begin(2), commit(2), insert(1, b"b")]
    assert decoder.transactions_at(frames, 0, OFFSET, LIMIT)[-1] == 6
    assert asked == []
    decoder.transactions_at([begin(1), bytearray(insert(1, b"a")), commit(1)], 0, OFFSET, LIMIT)
    assert asked == [0]


def test_a_transaction_cut_by_the_read_or_too_long_is_not_taken(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    whole = [begin(100), insert(1, b"a"), commit(100)]
    for frames in ([*whole, begin(200), insert(1, b"b")], [*whole, begin(200), *[insert(1, b"x")] * 5, commit(200)]):
        for implementation in both:
            assert implementation.transactions_at(frames, 0, OFFSET, LIMIT)[-1] == 3
    for implementation in both:
        assert implementation.transactions_at([keepalive(1, 1), *whole], 0, OFFSET, LIMIT)[3:] == ((1, -1, True), 4)
        assert implementation.transactions_at([insert(1, b"a"), *whole], 0, OFFSET, LIMIT) == (-1, [], [], None, 0)


def test_every_captured_message_in_a_transaction_finds_alike(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    taken = 0
    for raw in CAPTURED:
        for frames in ([begin(100), HEADER + raw, commit(100)], [begin(100), HEADER + raw, commit(100), begin(1),
                                                                 insert(1, b"a"), commit(1)]):
            result = assert_same(both, frames, 0, OFFSET, LIMIT)
            taken += result[1][1][-1][1] > 0
        for cut in range(len(raw)):
            assert_same(both, [begin(100), HEADER + raw[:cut], commit(100)], 0, OFFSET, LIMIT)
    assert taken > 10  # the captured Inserts: one of them a transaction's only row


@pytest.mark.parametrize(("frames", "start", "offset", "limit"), [
    ([begin(1), commit(1)], 0, OFFSET, 0),
    ([begin(1), commit(1)], 2, OFFSET, LIMIT),
    ([begin(1), commit(1)], -1, OFFSET, LIMIT),
    ([begin(1), commit(1)], 0, 0, LIMIT),
    ([begin(1), commit(1)], 0, -3, LIMIT),
    ([begin(1), commit(1)], 0, OFFSET, -1),
    ([begin(1), commit(1)], 0, 2**70, LIMIT),
    ([begin(1), commit(1)], True, OFFSET, LIMIT),
    ((begin(1), commit(1)), 0, OFFSET, LIMIT),
    ([begin(1), b"", commit(1)], 0, OFFSET, LIMIT),
    ([b"", begin(1), commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), bytearray(insert(1, b"a")), commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), memoryview(insert(1, b"a")).cast("b"), commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), insert(1, b"a"), None, commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), "w" * 60, commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), insert(1, b"a")[:-1], commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), insert(1, b"a"), insert(2, b"a"), commit(1)], 0, OFFSET, LIMIT),
    ([begin(1), commit(1)[:-1]], 0, OFFSET, LIMIT),
    ([keepalive(5, 1)[:-1], begin(1), commit(1)], 0, OFFSET, LIMIT),
    (None, 0, OFFSET, LIMIT),
])
def test_odd_calls_behave_alike(both: tuple[InsertDecoding, InsertDecoding], frames: object, start: object,
                                offset: object, limit: object) -> None:
    assert_same(both, frames, start, offset, limit)


def test_a_released_frame_behaves_alike(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    def frames() -> list[object]:
        released = memoryview(insert(1, b"a"))
        released.release()
        return [begin(1), released, commit(1)]

    python, compiled = both
    assert outcome(compiled.transactions_at, frames(), 0, OFFSET, LIMIT) == outcome(
        python.transactions_at, frames(), 0, OFFSET, LIMIT)


piece = st.one_of(
    st.tuples(st.just("txn"), st.lists(st.tuples(st.sampled_from([1, 1, 1, 2]), st.binary(max_size=6)), max_size=6)),
    st.tuples(st.just("keepalive"), st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 3))),
    st.tuples(st.just("junk"), st.binary(max_size=50)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(piece, max_size=12), st.integers(0, 200), st.integers(0, 5), st.integers(0, 4), st.binary(max_size=3),
       st.booleans())
def test_streams_of_transactions_find_alike(pieces: list[tuple[str, Any]], cut: int, start: int, limit: int,
                                           junk: bytes, views: bool) -> None:
    frames: list[bytes] = []
    for k, (kind, what) in enumerate(pieces):
        if kind == "txn":
            frames += [begin(1000 * k), *(insert(rid, value) for rid, value in what), commit(1000 * k)]
        elif kind == "keepalive":
            frames.append(keepalive(*what))
        else:
            frames.append(what)
    if frames:  # one frame broken somewhere: cut short, or with junk after it
        at = cut % len(frames)
        frames[at] = frames[at][:cut] if junk == b"" else frames[at] + junk
    stream: list[object] = [memoryview(f) if views and i % 2 else f for i, f in enumerate(frames)]
    both = insert_decoding("python"), insert_decoding("compiled")
    assert_same(both, stream, min(start, max(len(stream) - 1, 0)), OFFSET, limit)


def test_finding_groups_leaks_nothing_and_lets_go_of_every_frame(both: tuple[InsertDecoding, InsertDecoding]) -> None:
    compiled = both[1].transactions_at
    views = [memoryview(insert(1, b"a" * 40)), memoryview(begin(2))]
    frames: list[object] = [begin(1), views[0], commit(1), keepalive(9, 1), views[1], insert(2, b"b"), commit(2),
                            begin(3), insert(1, b"c")]

    def both_groups() -> None:
        compiled(frames, 0, OFFSET, LIMIT)
        compiled(frames, 4, OFFSET, LIMIT)

    def calls() -> None:
        for _ in range(1000):
            both_groups()

    assert_refcounts_kept(calls, (None, True, UNCHANGED, frames[0]))
    assert leaked(both_groups) < 4096
    for view in views:
        view.release()  # BufferError if a buffer taken from it was never released

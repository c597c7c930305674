"""The COPY's backend messages: the compiled ``copy_frames`` takes what the reference takes, to the byte.

Inputs are streams of CopyData and other messages, cut anywhere, with broken
lengths and any bounds (hypothesis), and odd calls. The outcome compared is
the whole result or the exception the reference raises.
"""

from __future__ import annotations

from struct import pack
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from implementations import compiled_module
from pgoutput.leaks import assert_refcounts_kept, leaked

from cdc.pg import wire
from cdc.pg.wire import copy_frames_reference


def message(kind: bytes, body: bytes) -> bytes:
    return kind + pack(">I", 4 + len(body)) + body


def outcome(call: Any, *args: object) -> tuple[Any, ...]:
    try:
        frames, pos, size = call(*args)
        return ("ok", [(type(f).__name__, f) for f in frames], pos, size)
    except Exception as error:  # noqa: BLE001 - the point is that both raise the same
        return ("error", type(error).__name__, str(error))


def compiled() -> Any:
    return compiled_module().copy_frames


_messages = st.one_of(
    st.binary(max_size=40).map(lambda body: message(b"d", body)),
    st.binary(max_size=40).map(lambda body: message(b"d", body)),
    st.sampled_from([b"c", b"E", b"N", b"S", b"Z"]).flatmap(
        lambda kind: st.binary(max_size=12).map(lambda body: message(kind, body))),
    # A length below 4, or far past the data: a broken message.
    st.tuples(st.sampled_from([b"d", b"E"]), st.sampled_from([0, 3, 1 << 31, 0xFFFFFFFF]), st.binary(max_size=6))
    .map(lambda m: m[0] + pack(">I", m[1]) + m[2]),
)


@settings(max_examples=400)
@given(
    messages=st.lists(_messages, max_size=12),
    cut=st.integers(0, 1 << 10),
    skip=st.integers(0, 8),
    max_messages=st.integers(-1, 14),
    max_bytes=st.one_of(st.integers(-1, 200), st.just(1 << 70)),
    as_bytearray=st.booleans(),
)
def test_compiled_copy_frames_takes_what_the_reference_takes(
    messages: list[bytes], cut: int, skip: int, max_messages: int, max_bytes: int, as_bytearray: bool
) -> None:
    data = b"".join(messages)
    end = max(0, len(data) - cut % (len(data) + 1))
    start = min(skip, end)
    buf = bytearray(data) if as_bytearray else data
    expected = outcome(copy_frames_reference, buf, start, end, max_messages, max_bytes)
    assert outcome(compiled(), buf, start, end, max_messages, max_bytes) == expected
    assert expected[0] == "ok"


def test_copy_frames_stops_before_what_is_not_copy_data_and_before_a_cut_message() -> None:
    data = message(b"d", b"one") + message(b"d", b"") + message(b"N", b"notice") + message(b"d", b"after")
    for call in (copy_frames_reference, compiled()):
        frames, pos, size = call(data, 0, len(data), 10, 100)
        assert (frames, size) == ([b"one", b""], 3)
        assert data[pos:pos + 1] == b"N"
        cut = message(b"d", b"whole") + message(b"d", b"cut short")
        assert call(cut, 0, len(cut) - 1, 10, 100) == ([b"whole"], 10, 5)


def test_copy_frames_stops_at_its_count_or_just_past_its_size() -> None:
    data = b"".join(message(b"d", bytes(10)) for _ in range(5))
    for call in (copy_frames_reference, compiled()):
        assert call(data, 0, len(data), 2, 1000)[1:] == (30, 20)
        assert call(data, 0, len(data), 10, 15)[1:] == (30, 20)  # the payload that crossed 15 is the last
        assert call(data, 0, len(data), 0, 1000) == ([], 0, 0)


@pytest.mark.parametrize("args", [
    (memoryview(b"d\0\0\0\4"), 0, 5, 1, 1),  # a view: only bytes and bytearray
    ("d", 0, 1, 1, 1),
    (b"d\0\0\0\4", -1, 5, 1, 1),
    (b"d\0\0\0\4", 0, 6, 1, 1),
    (b"d\0\0\0\4", 3, 2, 1, 1),
    (b"d\0\0\0\4", 1 << 80, 1 << 81, 1, 1),
    (b"d\0\0\0\4", -(1 << 80), 5, 1, 1),
    (b"d\0\0\0\4", 0, 5, 1.0, 1),
    (b"d\0\0\0\4", 0, 5, 1, "1"),
    (b"d\0\0\0\4", False, True * 5, True, 1 << 90),
])
def test_odd_calls_fail_or_pass_alike(args: tuple[object, ...]) -> None:
    assert outcome(compiled(), *args) == outcome(copy_frames_reference, *args)


def test_compiled_copy_frames_leaks_nothing() -> None:
    data = bytearray(b"".join(message(b"d", bytes(range(i))) for i in range(40)) + message(b"E", b"x"))
    call = compiled()
    assert leaked(lambda: call(data, 0, len(data), 100, 1 << 20)) < 4096
    assert leaked(lambda: outcome(call, data, 0, len(data) + 1, 1, 1), times=5000) < 4096

    def calls() -> None:
        for _ in range(100):
            call(data, 0, len(data), 100, 1 << 20)

    assert_refcounts_kept(calls, (data,))


def test_message_at_says_when_a_message_is_whole_and_rejects_impossible_lengths() -> None:
    data = message(b"E", b"Sx\0\0") + b"d\0\0"
    assert wire.message_at(data, 0, len(data)) == wire.Message(ord("E"), 5, 9)
    assert wire.message_at(data, 9, len(data)) is None  # a cut header
    assert wire.message_at(data, 0, 8) is None  # a cut body
    assert wire.needed(data, 0, 8) == 9
    assert wire.needed(data, 9, len(data)) == wire.HEADER_SIZE
    with pytest.raises(wire.WireError, match="at least 4"):
        wire.message_at(b"d\0\0\0\3", 0, 5)


def test_an_error_response_reads_as_libpq_words_it() -> None:
    body = b"SERROR\0VFATAL\0C57P01\0Mterminating connection\0Dbecause\0Hreconnect\0\0"
    fields = wire.error_fields(body)
    assert fields["C"] == "57P01"
    assert wire.error_text(fields) == "ERROR: terminating connection DETAIL: because HINT: reconnect"
    assert wire.error_fields(b"Mcut short") == {}  # no terminator: nothing invented
    assert wire.error_text({}) == "ERROR: no message"


def test_copy_data_frames_a_payload() -> None:
    framed = wire.copy_data(b"r" + bytes(33))
    assert copy_frames_reference(framed, 0, len(framed), 1, 1 << 20) == ([b"r" + bytes(33)], len(framed), 34)

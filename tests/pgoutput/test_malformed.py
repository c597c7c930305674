"""Bytes that are not a valid message raise PgOutputError, and nothing else, at a sane offset."""

from __future__ import annotations

from struct import pack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.pgoutput import Insert, LogicalMessage, PgOutputError, Relation, decode

from .captures import all_messages
from .encoder import encode

CAPTURED = all_messages()
INSERT = next(raw for raw, in_stream, binary in CAPTURED if raw[:1] == b"I" and not in_stream and len(raw) > 200)
TYPE_BYTES = b"BCORYIUDTMSEcAbPKrp"


def check(data: bytes, in_stream: bool) -> None:
    """decode returns a message that encodes back to ``data``, or raises a well-formed PgOutputError."""
    try:
        message = decode(data, in_stream=in_stream)
    except PgOutputError as error:
        assert 0 <= error.offset <= len(data), error
        assert error.message_type == (chr(data[0]) if data else "?")
        return
    again = encode(message)
    # Text and binary values decode alike, so only their kind bytes may differ.
    assert len(again) == len(data)
    assert all(a == b or (a, b) == (ord("t"), ord("b")) for a, b in zip(again, data))


def error_of(data: bytes, in_stream: bool = False) -> PgOutputError:
    with pytest.raises(PgOutputError) as caught:
        decode(data, in_stream=in_stream)
    return caught.value


def test_every_truncation_of_every_captured_message_is_an_error() -> None:
    for raw, in_stream, _ in CAPTURED:
        for cut in range(len(raw)):
            if raw[:1] == b"A" and cut == 9:
                continue  # a protocol 4 Stream Abort cut to 9 bytes is the protocol 2 form
            error = error_of(raw[:cut], in_stream)
            assert 0 <= error.offset <= cut
            assert error.message_type == (chr(raw[0]) if cut else "?")


def test_truncated_insert_points_at_the_value_that_is_cut() -> None:
    values = (b"1", b"0b9c5f7e-3d1a-4c2b-9f8e-1a2b3c4d5e6f", b"order.created")
    raw = encode(Insert(None, 16384, values))
    second_value = raw.index(values[1])
    error = error_of(raw[: second_value + 10])
    assert error.offset == second_value and "column 1" in error.reason
    assert error_of(raw[: second_value - 2]).offset == second_value - 4  # inside its length


def test_every_unknown_type_byte_is_an_error_at_offset_zero() -> None:
    for type_byte in set(range(256)) - set(TYPE_BYTES):
        error = error_of(bytes([type_byte]) + bytes(40))
        assert (error.offset, error.message_type) == (0, chr(type_byte))


def test_empty_message_is_an_error() -> None:
    error = error_of(b"")
    assert (error.offset, error.message_type) == (0, "?")


def test_unknown_tuple_kind_byte_is_an_error_at_that_byte() -> None:
    first_kind = 8  # 'I', relation OID, 'N', column count
    assert INSERT[first_kind : first_kind + 1] == b"t"
    error = error_of(INSERT[:first_kind] + b"x" + INSERT[first_kind + 1 :])
    assert error.offset == first_kind and "kind" in error.reason


def test_trailing_bytes_after_any_captured_message_are_an_error() -> None:
    for raw, in_stream, _ in CAPTURED:
        assert error_of(raw + b"\x00", in_stream).offset == len(raw)


def test_negative_value_length_is_an_error_at_the_length() -> None:
    raw = b"I" + pack(">I", 1) + b"N" + pack(">H", 1) + b"t" + pack(">i", -1)
    error = error_of(raw)
    assert error.offset == 9 and "negative" in error.reason


def test_value_longer_than_the_message_is_an_error() -> None:
    raw = b"I" + pack(">I", 1) + b"N" + pack(">H", 2) + b"t" + pack(">i", 100) + b"abc" + b"n"
    error = error_of(raw)
    assert error.offset == 13 and "100 bytes" in error.reason


def test_invalid_utf8_in_a_name_is_an_error_at_the_bad_byte() -> None:
    raw = encode(Relation(None, 1, "public", "outbox", ord("d"), ()))
    bad = raw.replace(b"outbox", b"out\xffox")
    assert error_of(bad).offset == bad.index(b"\xff")


def test_string_without_terminator_is_an_error() -> None:
    assert "NUL" in error_of(b"O" + pack(">Q", 1) + b"origin").reason


@pytest.mark.parametrize(("raw", "offset"), [
    (b"S" + pack(">IB", 1, 2), 5),  # first-segment flag is 0 or 1
    (b"R" + pack(">I", 1) + b"public\0t\0" + b"x" + pack(">H", 0), 14),  # replica identity
    (b"U" + pack(">I", 1) + b"X" + pack(">H", 0), 5),  # neither 'K', 'O' nor 'N'
    (b"U" + pack(">I", 1) + b"K" + pack(">H", 0) + b"K" + pack(">H", 0), 8),  # old key, then not 'N'
    (b"D" + pack(">I", 1) + b"N" + pack(">H", 0), 5),  # a Delete has no new tuple
    (b"T" + pack(">IB", 3, 0) + pack(">I", 1), 6),  # three relations announced, one sent
    (b"M" + pack(">BQ", 1, 1) + b"p\0" + pack(">I", 5) + b"abc", 16),  # content cut short
    (b"A" + pack(">II", 1, 1) + pack(">I", 0), 9),  # neither the short nor the long form
    (b"E\x00", 1),  # Stream Stop has no body
], ids=["first-segment", "replica-identity", "update-tag", "update-new-tag", "delete-tag", "truncate-count",
        "message-content", "abort-length", "stream-stop-body"])
def test_invalid_fields_are_errors_where_the_field_starts(raw: bytes, offset: int) -> None:
    assert error_of(raw).offset == offset


def test_memoryview_and_bytearray_decode_like_bytes_and_give_bytes_values() -> None:
    framed = b"\xff" * 25 + INSERT  # as a message sits in an XLogData payload
    expected = decode(INSERT)
    for data in (memoryview(framed)[25:], bytes(INSERT), bytearray(INSERT)):
        decoded = decode(data)
        assert decoded == expected
        assert isinstance(decoded, Insert) and all(type(v) is bytes for v in decoded.new if v)
    message = decode(memoryview(encode(LogicalMessage(None, 1, 5, "p", b"body"))))
    assert isinstance(message, LogicalMessage) and type(message.content) is bytes


edit = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 8), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    for kind, where, byte in edits:
        if kind == "set" and data:
            i = where % len(data)
            data = data[:i] + bytes([byte]) + data[i + 1 :]
        elif kind == "cut":
            data = data[: where % (len(data) + 1)]
        elif kind == "append":
            data = data + bytes([byte]) * where
        elif kind == "insert":
            i = where % (len(data) + 1)
            data = data[:i] + bytes([byte]) + data[i:]
    return data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CAPTURED), st.lists(edit, min_size=1, max_size=4), st.booleans())
def test_mutated_captured_messages_decode_or_raise_pgoutput_error(
    captured: tuple[bytes, bool, bool], edits: list[tuple[str, int, int]], flip_stream: bool
) -> None:
    raw, in_stream, _ = captured
    check(apply(raw, edits), in_stream != flip_stream)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.tuples(st.sampled_from(TYPE_BYTES), st.binary(max_size=64))
                 .map(lambda t: bytes([t[0]]) + t[1])), st.booleans())
def test_random_bytes_decode_or_raise_pgoutput_error(data: bytes, in_stream: bool) -> None:
    check(data, in_stream)

"""decode_insert_at, the reader's hot path, agrees with decode on every Insert, good or broken (each implementation)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.pgoutput import Insert, PgOutputError, decode
from implementations import IMPLEMENTATIONS, InsertDecoding, insert_decoding

from .captures import all_messages

# What the reader hands over: the message inside its XLogData frame.
HEADER = b"w" + bytes(range(24))
INSERTS = [raw for raw, in_stream, _ in all_messages() if raw[:1] == b"I" and not in_stream]


def outcome(call: object, *args: object) -> object:
    try:
        return call(*args)  # type: ignore[operator]
    except PgOutputError as error:
        return ("error", error.offset, error.reason, error.message_type)


def via_decode(raw: bytes) -> object:
    try:
        message = decode(raw)
    except PgOutputError as error:
        return ("error", error.offset, error.reason, error.message_type)
    assert isinstance(message, Insert)
    return (message.relation_id, message.new)


def test_every_captured_insert_reads_the_same_in_place_as_alone(inserts: InsertDecoding) -> None:
    assert len(INSERTS) > 10
    for raw in INSERTS:
        assert inserts.decode_insert_at(HEADER + raw, len(HEADER)) == via_decode(raw)
        assert inserts.decode_insert_at(raw, 0) == via_decode(raw)


def test_every_truncation_of_a_captured_insert_is_the_same_error_as_decode_gives(inserts: InsertDecoding) -> None:
    for raw in INSERTS[:20]:
        for cut in range(1, len(raw)):
            assert outcome(inserts.decode_insert_at, HEADER + raw[:cut], len(HEADER)) == via_decode(raw[:cut])


def test_trailing_bytes_and_other_message_types_are_errors_not_rows(inserts: InsertDecoding) -> None:
    at = inserts.decode_insert_at
    raw = INSERTS[0]
    assert outcome(at, HEADER + raw + b"\x00", len(HEADER)) == via_decode(raw + b"\x00")
    error = outcome(at, HEADER + b"U" + raw[1:], len(HEADER))
    assert isinstance(error, tuple) and error[0] == "error" and "Insert" in error[2]
    assert outcome(at, HEADER, len(HEADER)) == ("error", 0, "empty message", "?")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@given(st.sampled_from(INSERTS), st.integers(min_value=1), st.binary(min_size=1, max_size=4))
def test_a_corrupted_insert_reads_the_same_in_place_as_alone(implementation: str, raw: bytes, where: int, junk: bytes) -> None:
    at = 1 + where % (len(raw) - 1)  # past the type byte: still an Insert, broken somewhere
    broken = raw[:at] + junk + raw[at + len(junk):]
    decode_insert_at = insert_decoding(implementation).decode_insert_at
    assert outcome(decode_insert_at, HEADER + broken, len(HEADER)) == via_decode(broken)


def test_runs_end_where_the_relation_changes_or_a_frame_is_not_an_insert(inserts: InsertDecoding) -> None:
    frames: list[bytes | memoryview] = [HEADER + raw for raw in INSERTS]
    frames[3:3] = [b"k" + bytes(17), HEADER + b"C" + bytes(25)]  # a keepalive and a Commit in between
    frames[:5] = [memoryview(f) for f in frames[:5]]
    runs, i = [], 0
    while i < len(frames):
        if frames[i][0] != HEADER[0] or frames[i][len(HEADER)] != ord("I"):
            i += 1
            continue
        relation_id, run, i = inserts.insert_run_at(frames, i, len(HEADER))
        runs.append((relation_id, run))
    assert [(rid, values) for rid, run in runs for values in run] == [via_decode(raw) for raw in INSERTS]
    assert sum(len(run) for _, run in runs[:1]) == 3  # the keepalive ended the first run
    assert all(a[0] != b[0] for a, b in itertools.pairwise(runs[1:]))  # after it, a new run only for a new relation

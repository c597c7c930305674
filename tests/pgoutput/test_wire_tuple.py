"""The compiled run and group decoders hand rows on as WireTuples: each behaves as the tuple it stands for.

A WireTuple (cdc/_accel_tuple.c) keeps a row in the frame it came in instead of
making one bytes object per column. Everything that reads rows (the reference
converters, dead letters, the streamed-transaction spool) reads them as
sequences, so each must be indistinguishable from the reference decoder's tuple
as a sequence: items, length, equality, hash, order, repr, pickling.
"""

from __future__ import annotations

import copy
import pickle
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.pgoutput import UNCHANGED, Begin, Commit, Insert
from implementations import InsertDecoding, insert_decoding, is_wire_tuple, wire_tuple

from .captures import all_messages
from .encoder import encode

HEADER = b"w" + bytes(range(24))
OFFSET = len(HEADER)
CAPTURED = [raw for raw, in_stream, _ in all_messages() if raw[:1] == b"I" and not in_stream]
values = st.lists(st.one_of(st.binary(max_size=40), st.none(), st.just(UNCHANGED)), max_size=12).map(tuple)


@pytest.fixture(scope="module")
def compiled() -> InsertDecoding:
    return insert_decoding("compiled")


def frame(row: tuple[Any, ...], relation_id: int = 1) -> bytes:
    return HEADER + encode(Insert(None, relation_id, row))


def test_runs_and_groups_of_bytes_frames_come_as_wire_tuples(compiled: InsertDecoding) -> None:
    rows = [(b"a", None, UNCHANGED), (b"", b"b" * 300, None)]
    _, run, _ = compiled.insert_run_at([frame(row) for row in rows], 0, OFFSET)
    group = [HEADER + encode(Begin(100, 1, 7)), *(frame(row) for row in rows), HEADER + encode(Commit(0, 100, 108, 1))]
    _, tuples, *_ = compiled.transactions_at(group, 0, OFFSET, 4)
    for got in (run, tuples):
        assert all(map(is_wire_tuple, got)) and got == rows
    # A single message's decoding makes the message's own tuple, as before.
    assert type(compiled.decode_insert_at(frame(rows[0]), OFFSET)[1]) is tuple


@given(values)
def test_a_wire_tuple_is_its_tuple_as_a_sequence(row: tuple[Any, ...]) -> None:
    wire = wire_tuple(row)
    assert wire == row and row == wire and (wire != row) is False
    assert hash(wire) == hash(row) and repr(wire) == repr(row) and len(wire) == len(row)
    assert tuple(wire) == row and list(wire) == list(row) and wire != list(row)
    assert [type(v) for v in wire] == [type(v) for v in row] and all(w is UNCHANGED for w, r in zip(wire, row)
                                                                        if r is UNCHANGED)
    for i in range(-len(row) - 2, len(row) + 2):
        if -len(row) <= i < len(row):
            assert wire[i] == row[i] and type(wire[i]) is type(row[i])
        else:
            with pytest.raises(IndexError):
                wire[i]
    assert wire[1:] == row[1:] and wire[::-1] == row[::-1] and wire[:0] == ()
    assert (wire < row + (b"",)) and (wire <= row) and not (wire > row)
    assert pickle.loads(pickle.dumps(wire)) == row and copy.deepcopy(wire) == row
    assert wire == wire_tuple(row) and hash(wire) == hash(wire_tuple(row))
    with pytest.raises(TypeError):
        wire["0"]


def test_every_captured_insert_comes_as_the_reference_tuple(compiled: InsertDecoding) -> None:
    python = insert_decoding("python")
    frames = [HEADER + raw for raw in CAPTURED]
    for i in range(len(frames)):
        got = compiled.insert_run_at(frames, i, OFFSET)
        assert got == python.insert_run_at(frames, i, OFFSET)
        assert all(map(is_wire_tuple, got[1]))


def test_a_row_from_a_memoryview_keeps_its_values_when_the_memory_changes(compiled: InsertDecoding) -> None:
    row = (b"unique", None, b"x" * 100)
    buffer = bytearray(frame(row))
    _, run, _ = compiled.insert_run_at([memoryview(buffer)], 0, OFFSET)
    buffer[OFFSET:] = bytes(len(buffer) - OFFSET)  # the reader's buffer, refilled by the next read
    assert is_wire_tuple(run[0]) and run[0] == row


def test_a_row_holds_its_frame_until_dropped(compiled: InsertDecoding) -> None:
    frames = [frame((b"a", b"b")), frame((b"c",))]
    before = [sys.getrefcount(f) for f in frames]
    _, run, _ = compiled.insert_run_at(frames, 0, OFFSET)
    assert [sys.getrefcount(f) for f in frames] == [n + 1 for n in before]
    del run
    assert [sys.getrefcount(f) for f in frames] == before

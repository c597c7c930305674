"""The row messages: TupleData, and Insert, Update and Delete that carry it.

Insert and TupleData are the hot path, decoded once per row. Update and
Delete are rarer and read their header with the careful ``_Cursor``, but
share the tuple decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from struct import error as StructError

from . import _struct
from ._wire import _Cursor, _error, _overrun, _trailing
from .errors import PgOutputError
from .messages import UNCHANGED, Delete, Insert, TupleData, Update, Value

# Bound once: attribute lookups on the Struct objects would cost on every call.
_unpack_u16 = _struct.U16.unpack_from
_unpack_u32 = _struct.U32.unpack_from
_unpack_u32_u32 = _struct.U32_U32.unpack_from

# A frozen dataclass's __init__ assigns each field through object.__setattr__;
# for Insert that is a tenth of the decoding time. Writing the slots directly
# costs half and builds the same object (a test checks every field is set).
_new = object.__new__
_set_insert_xid = getattr(Insert, "xid").__set__
_set_insert_relation_id = getattr(Insert, "relation_id").__set__
_set_insert_new = getattr(Insert, "new").__set__


# --- the hot path: Insert and TupleData -------------------------------------


def _tuple(buf: bytes, pos: int, end: int) -> tuple[TupleData, int]:
    """The TupleData starting at ``pos``, and the offset just past it.

    This runs for every column of every row, so it is optimistic: no bounds
    check per column. A value whose length runs past the end leaves ``pos``
    beyond ``end``, and since ``pos`` only grows, the next column's kind byte
    (an IndexError) or the final check catches it; ``_tuple_error`` then walks
    the tuple again, carefully, to say exactly what is wrong and where.
    """
    first = pos
    try:
        (ncols,) = _unpack_u16(buf, pos)
        pos += 2
        values: list[Value] = []
        append = values.append
        for _ in range(ncols):
            kind = buf[pos]
            if kind == 116 or kind == 98:  # 't' text, 'b' binary: Int32 length + bytes
                start = pos + 5
                pos = start + _unpack_u32(buf, pos + 1)[0]
                append(buf[start:pos])
            elif kind == 110:  # 'n' NULL
                append(None)
                pos += 1
            elif kind == 117:  # 'u' unchanged TOAST value, not sent
                append(UNCHANGED)
                pos += 1
            else:
                raise _tuple_error(buf, first, end)
    except (IndexError, StructError):
        raise _tuple_error(buf, first, end) from None
    if pos > end:  # the last value overran
        raise _tuple_error(buf, first, end)
    return tuple(values), pos


def _tuple_error(buf: bytes, pos: int, end: int) -> PgOutputError:
    """Why the TupleData at ``pos`` does not decode: the slow, checked walk."""
    if pos + 2 > end:
        return _error(buf, pos, "message ends inside the TupleData column count")
    (ncols,) = _unpack_u16(buf, pos)
    pos += 2
    for i in range(ncols):
        if pos >= end:
            return _error(buf, pos, f"message ends before column {i} of {ncols}")
        kind = buf[pos]
        if kind == 116 or kind == 98:
            if pos + 5 > end:
                return _error(buf, pos + 1, f"message ends inside the length of column {i}")
            (length,) = _unpack_u32(buf, pos + 1)
            if pos + 5 + length > end:
                return _overrun(buf, pos + 5, length, f"value of column {i}")
            pos += 5 + length
        elif kind == 110 or kind == 117:
            pos += 1
        else:
            return _error(buf, pos, f"column {i} has unknown kind byte {kind:#04x}")
    return _error(buf, pos, "TupleData does not decode")  # unreachable: the fast walk failed


def _insert(buf: bytes, in_stream: bool) -> Insert:
    end = len(buf)
    try:
        if in_stream:
            xid, relation_id = _unpack_u32_u32(buf, 1)
            pos = 9
        else:
            (relation_id,) = _unpack_u32(buf, 1)
            xid = None
            pos = 5
        tag = buf[pos]
    except (StructError, IndexError):
        c = _Cursor(buf)  # the careful reader finds what is missing
        c.xid(in_stream)
        c.u32("relation OID")
        raise c.fail("message ends before 'N'") from None
    if tag != 78:  # 'N'
        raise _error(buf, pos, f"expected 'N' before the new tuple, got {tag:#04x}")
    new, pos = _tuple(buf, pos + 1, end)
    if pos != end:
        raise _trailing(buf, pos)
    insert: Insert = _new(Insert)
    _set_insert_xid(insert, xid)
    _set_insert_relation_id(insert, relation_id)
    _set_insert_new(insert, new)
    return insert


def decode_insert_at(buf: bytes, offset: int) -> tuple[int, TupleData]:
    """(relation OID, new tuple) of the Insert message starting at ``buf[offset]``, outside a streamed block.

    The reader's hot path: an Insert read straight out of its XLogData frame,
    with no slice of the frame and no ``Insert`` object. Input that does not
    decode raises the same ``PgOutputError`` as ``decode(buf[offset:])``,
    offsets counted from the message's first byte.
    """
    end = len(buf)
    try:
        if buf[offset] == 73 and buf[offset + 5] == 78:  # 'I', then 'N' after the relation OID
            new, pos = _tuple(buf, offset + 6, end)
            if pos == end:
                return _unpack_u32(buf, offset + 1)[0], new
    except (IndexError, PgOutputError):
        pass
    insert = _insert_message(buf[offset:])  # the message alone: exact errors and offsets
    return insert.relation_id, insert.new


def insert_run_at(frames: Sequence[bytes | memoryview], start: int, offset: int) -> tuple[int, list[TupleData], int]:
    """The run of Inserts into one relation that starts at ``frames[start]``: (relation OID, new tuples, next index).

    Each frame holds its message at ``offset`` (an XLogData frame: b"w", a
    header, then the message). The run goes on while the next frame is also an
    XLogData Insert of the same relation; ``frames[start]`` must be an Insert.
    A frame that does not decode raises what ``decode_insert_at(bytes(frame),
    offset)`` raises, with the run so far unreturned, exactly as decoding frame
    by frame would. The first frame of the next relation's run is decoded here
    (a frame that does not decode must fail before the run before it is handed
    on) and again by the next call.
    """
    relation_id, values = decode_insert_at(bytes(frames[start]), offset)
    run = [values]
    i, n = start + 1, len(frames)
    while i < n:
        data = frames[i]
        if data[0] != 0x77 or len(data) <= offset or data[offset] != 0x49:  # not an XLogData ('w') Insert ('I')
            break
        next_id, values = decode_insert_at(bytes(data), offset)
        if next_id != relation_id:
            break
        run.append(values)
        i += 1
    return relation_id, run, i


def _insert_message(buf: bytes) -> Insert:
    if not buf:
        raise PgOutputError("empty message", offset=0, message_type="?")
    if buf[0] != 73:
        raise _error(buf, 0, f"expected an Insert message ('I'), got {buf[0]:#04x}")
    return _insert(buf, False)


# --- Update and Delete: the careful reader, plus tuples ----------------------


class _TupleCursor(_Cursor):
    """``_Cursor`` that can also read a TupleData."""

    __slots__ = ()

    def tuple_data(self) -> TupleData:
        values, self.pos = _tuple(self.buf, self.pos, len(self.buf))
        return values


def _update(buf: bytes, in_stream: bool) -> Update:
    c = _TupleCursor(buf)
    xid = c.xid(in_stream)
    relation_id = c.u32("relation OID")
    tag = c.byte("'K', 'O' or 'N'")
    old = key = None
    if tag == 79:  # 'O': the whole old row (REPLICA IDENTITY FULL)
        old = c.tuple_data()
        tag = c.byte("'N'")
    elif tag == 75:  # 'K': the old key, sent only when the key changed
        key = c.tuple_data()
        tag = c.byte("'N'")
    if tag != 78:
        raise c.fail(f"expected 'N' before the new tuple, got {tag:#04x}", c.pos - 1)
    return c.done(Update(xid, relation_id, old, key, c.tuple_data()))


def _delete(buf: bytes, in_stream: bool) -> Delete:
    c = _TupleCursor(buf)
    xid = c.xid(in_stream)
    relation_id = c.u32("relation OID")
    tag = c.byte("'K' or 'O'")
    if tag == 79:
        return c.done(Delete(xid, relation_id, c.tuple_data(), None))
    if tag == 75:
        return c.done(Delete(xid, relation_id, None, c.tuple_data()))
    raise c.fail(f"expected 'K' or 'O' before the old tuple, got {tag:#04x}", c.pos - 1)

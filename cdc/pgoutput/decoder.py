"""Decode one pgoutput message (protocol versions 1 to 4) from its bytes.

``decode`` is a pure function of its input: no I/O, no state. The one piece of
context it cannot see in the bytes is whether the message sits inside a
streamed block (between Stream Start and Stream Stop), where Relation, Type,
Insert, Update, Delete, Truncate and Message carry the transaction's xid in
front of their body; the caller tracks that and passes ``in_stream``. (A
non-transactional Message is sent the moment it is decoded, never in a block.)

Layouts follow PostgreSQL's proto.c. Input the decoder does not understand
raises ``PgOutputError`` at the offset where decoding stopped: the start of the
field that is cut short or invalid, or the first byte of trailing garbage.
"""

from __future__ import annotations

from struct import Struct, calcsize
from struct import error as StructError
from typing import Any, Callable, Final, TypeVar

from . import _struct
from .errors import PgOutputError
from .messages import (
    UNCHANGED, Begin, BeginPrepare, Column, Commit, CommitPrepared, Delete, Insert,
    LogicalMessage, Message, Origin, Prepare, Relation, RollbackPrepared, StreamAbort,
    StreamCommit, StreamPrepare, StreamStart, StreamStop, Truncate, TupleData, Type,
    Update, Value,
)

_M = TypeVar("_M")

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

_REPLICA_IDENTITIES: Final = frozenset(b"dnfi")  # default, nothing, full, index
_MAX_INT32: Final = 0x7FFFFFFF


def decode(data: bytes | bytearray | memoryview, *, in_stream: bool = False) -> Message:
    """Decode one complete pgoutput message.

    ``in_stream`` must be true for messages between Stream Start and Stream
    Stop. Column values come back as ``bytes``: a ``memoryview`` or
    ``bytearray`` is copied once, up front, cheaper than once per value.
    """
    if type(data) is not bytes:
        data = data.tobytes() if isinstance(data, memoryview) else bytes(data)
    if not data:
        raise PgOutputError("empty message", offset=0, message_type="?")
    decoder = _DECODERS[data[0]]
    if decoder is None:
        raise _error(data, 0, f"unknown message type byte {data[0]:#04x}")
    return decoder(data, in_stream)


def _error(buf: bytes, offset: int, reason: str) -> PgOutputError:
    return PgOutputError(reason, offset=offset, message_type=chr(buf[0]))


def _short(buf: bytes, st: Struct, pos: int, what: str) -> PgOutputError:
    """``st`` does not fit at ``pos``: point at the first of its fields that is cut."""
    offset = pos
    for i in range(2, len(st.format) + 1):
        if pos + calcsize(st.format[:i]) > len(buf):
            break
        offset = pos + calcsize(st.format[:i])
    return _error(buf, offset, f"message ends inside {what} ({len(buf) - pos} of {st.size} bytes present)")


def _trailing(buf: bytes, pos: int) -> PgOutputError:
    return _error(buf, pos, f"{len(buf) - pos} unexpected trailing byte(s)")


def _overrun(buf: bytes, pos: int, length: int, what: str) -> PgOutputError:
    if length > _MAX_INT32:  # read unsigned, sent as a negative Int32
        return _error(buf, pos - 4, f"{what} has negative length {length - (1 << 32)}")
    return _error(buf, pos, f"{what} of {length} bytes runs past the end ({len(buf) - pos} bytes left)")


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


# --- everything else: once per transaction or rarer --------------------------


class _Cursor:
    """Reads fields left to right; every failure names the offset it reached."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 1  # past the type byte

    def fail(self, reason: str, offset: int | None = None) -> PgOutputError:
        return _error(self.buf, self.pos if offset is None else offset, reason)

    def fixed(self, st: Struct, what: str) -> tuple[Any, ...]:
        pos = self.pos
        if pos + st.size > len(self.buf):
            raise _short(self.buf, st, pos, what)
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)

    def u32(self, what: str) -> int:
        return int(self.fixed(_struct.U32, what)[0])

    def xid(self, in_stream: bool) -> int | None:
        return self.u32("xid") if in_stream else None

    def byte(self, what: str) -> int:
        if self.pos >= len(self.buf):
            raise self.fail(f"message ends before {what}")
        self.pos += 1
        return self.buf[self.pos - 1]

    def string(self, what: str) -> str:
        buf, pos = self.buf, self.pos
        nul = buf.find(0, pos)
        if nul < 0:
            raise self.fail(f"{what} is not NUL-terminated")
        try:
            text = buf[pos:nul].decode()
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 ({exc.reason})", pos + exc.start) from None
        self.pos = nul + 1
        return text

    def counted(self, what: str) -> bytes:
        length = self.u32(f"length of {what}")
        start = self.pos
        if start + length > len(self.buf):
            raise _overrun(self.buf, start, length, what)
        self.pos = start + length
        return self.buf[start : self.pos]

    def tuple_data(self) -> TupleData:
        values, self.pos = _tuple(self.buf, self.pos, len(self.buf))
        return values

    def done(self, message: _M) -> _M:
        if self.pos != len(self.buf):
            raise _trailing(self.buf, self.pos)
        return message


def _update(buf: bytes, in_stream: bool) -> Update:
    c = _Cursor(buf)
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
    c = _Cursor(buf)
    xid = c.xid(in_stream)
    relation_id = c.u32("relation OID")
    tag = c.byte("'K' or 'O'")
    if tag == 79:
        return c.done(Delete(xid, relation_id, c.tuple_data(), None))
    if tag == 75:
        return c.done(Delete(xid, relation_id, None, c.tuple_data()))
    raise c.fail(f"expected 'K' or 'O' before the old tuple, got {tag:#04x}", c.pos - 1)


def _exact(buf: bytes, st: Struct, what: str) -> tuple[Any, ...]:
    """The whole body of a fixed-size message."""
    if len(buf) < 1 + st.size:
        raise _short(buf, st, 1, what)
    if len(buf) > 1 + st.size:
        raise _trailing(buf, 1 + st.size)
    return st.unpack_from(buf, 1)


def _fixed_size(cls: Callable[..., _M], st: Struct, what: str) -> Callable[[bytes, bool], _M]:
    """Decoder of a message whose body is exactly ``st``, fields in class order."""
    size, unpack = 1 + st.size, st.unpack_from

    def decode_fixed(buf: bytes, in_stream: bool) -> _M:
        if len(buf) == size:  # Begin and Commit come with every transaction
            return cls(*unpack(buf, 1))
        return cls(*_exact(buf, st, what))

    return decode_fixed


def _with_gid(cls: Callable[..., _M], st: Struct, what: str) -> Callable[[bytes, bool], _M]:
    """Decoder of a two-phase message: ``st``, then the transaction's gid."""

    def decode_with_gid(buf: bytes, in_stream: bool) -> _M:
        c = _Cursor(buf)
        fields = c.fixed(st, what)
        return c.done(cls(*fields, c.string("gid")))

    return decode_with_gid


def _origin(buf: bytes, in_stream: bool) -> Origin:
    c = _Cursor(buf)
    (commit_lsn,) = c.fixed(_struct.U64, "origin commit LSN")
    return c.done(Origin(commit_lsn, c.string("origin name")))


def _relation(buf: bytes, in_stream: bool) -> Relation:
    c = _Cursor(buf)
    xid = c.xid(in_stream)
    relation_id = c.u32("relation OID")
    namespace = c.string("namespace")
    name = c.string("relation name")
    identity = c.byte("replica identity")
    if identity not in _REPLICA_IDENTITIES:
        raise c.fail(f"unknown replica identity {identity:#04x}", c.pos - 1)
    (ncols,) = c.fixed(_struct.U16, "column count")
    columns = []
    for i in range(ncols):
        flags = c.byte(f"flags of column {i}")
        column_name = c.string(f"name of column {i}")
        type_oid, type_modifier = c.fixed(_struct.COLUMN_TYPE, f"type of column {i}")
        columns.append(Column(flags, column_name, type_oid, type_modifier))
    return c.done(Relation(xid, relation_id, namespace, name, identity, tuple(columns)))


def _type(buf: bytes, in_stream: bool) -> Type:
    c = _Cursor(buf)
    xid = c.xid(in_stream)
    type_oid = c.u32("type OID")
    namespace = c.string("namespace")
    return c.done(Type(xid, type_oid, namespace, c.string("type name")))


def _truncate(buf: bytes, in_stream: bool) -> Truncate:
    c = _Cursor(buf)
    xid = c.xid(in_stream)
    count, options = c.fixed(_struct.TRUNCATE_HEAD, "relation count and options")
    start = c.pos
    if start + 4 * count > len(buf):
        raise c.fail(f"{count} relation OIDs do not fit in the {len(buf) - start} bytes left")
    c.pos = start + 4 * count
    relation_ids = tuple(oid for (oid,) in _struct.U32.iter_unpack(buf[start : c.pos]))
    return c.done(Truncate(xid, options, relation_ids))


def _message(buf: bytes, in_stream: bool) -> LogicalMessage:
    c = _Cursor(buf)
    xid = c.xid(in_stream)
    flags, lsn = c.fixed(_struct.MESSAGE_HEAD, "flags and LSN")
    prefix = c.string("prefix")
    return c.done(LogicalMessage(xid, flags, lsn, prefix, c.counted("content")))


def _stream_start(buf: bytes, in_stream: bool) -> StreamStart:
    xid, first_segment = _exact(buf, _struct.STREAM_START, "Stream Start")
    if first_segment > 1:
        raise _error(buf, 5, f"first-segment flag must be 0 or 1, got {first_segment}")
    return StreamStart(xid, first_segment == 1)


def _stream_abort(buf: bytes, in_stream: bool) -> StreamAbort:
    # abort_lsn and abort_time come only with protocol 4 and streaming=parallel,
    # which nothing in the message announces but its length.
    if len(buf) <= 1 + _struct.STREAM_ABORT.size:
        xid, subxid = _exact(buf, _struct.STREAM_ABORT, "Stream Abort")
        return StreamAbort(xid, subxid, None, None)
    return StreamAbort(*_exact(buf, _struct.STREAM_ABORT_PARALLEL, "Stream Abort's abort LSN and time"))


_Decoder = Callable[[bytes, bool], Message]

_BY_TYPE: Final[dict[str, _Decoder]] = {
    "B": _fixed_size(Begin, _struct.BEGIN, "Begin"),
    "C": _fixed_size(Commit, _struct.COMMIT, "Commit"),
    "O": _origin,
    "R": _relation,
    "Y": _type,
    "I": _insert,
    "U": _update,
    "D": _delete,
    "T": _truncate,
    "M": _message,
    "S": _stream_start,
    "E": _fixed_size(StreamStop, _struct.NOTHING, "Stream Stop"),
    "c": _fixed_size(StreamCommit, _struct.STREAM_COMMIT, "Stream Commit"),
    "A": _stream_abort,
    "b": _with_gid(BeginPrepare, _struct.BEGIN_PREPARE, "Begin Prepare"),
    "P": _with_gid(Prepare, _struct.PREPARE, "Prepare"),
    "K": _with_gid(CommitPrepared, _struct.PREPARE, "Commit Prepared"),
    "r": _with_gid(RollbackPrepared, _struct.ROLLBACK_PREPARED, "Rollback Prepared"),
    "p": _with_gid(StreamPrepare, _struct.PREPARE, "Stream Prepare"),
}
# Indexed by the message's first byte: one tuple lookup instead of an if-chain.
_DECODERS: Final = tuple(_BY_TYPE.get(chr(i)) for i in range(256))

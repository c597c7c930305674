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

from collections.abc import Callable
from struct import Struct
from typing import Any, Final, TypeVar

from . import _struct
from ._tuples import _delete, _insert, _update
from ._wire import _Cursor, _error, _short, _trailing
from .errors import PgOutputError
from .messages import (
    Begin, BeginPrepare, Column, Commit, CommitPrepared, LogicalMessage, Message,
    Origin, Prepare, Relation, RollbackPrepared, StreamAbort, StreamCommit,
    StreamPrepare, StreamStart, StreamStop, Truncate, Type,
)

_M = TypeVar("_M")

_REPLICA_IDENTITIES: Final = frozenset(b"dnfi")  # default, nothing, full, index


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


# --- everything else: once per transaction or rarer --------------------------
# (Insert, Update and Delete, with the hot TupleData path, live in _tuples;
# the careful _Cursor reader and the error helpers in _wire.)


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

"""Test-only encoder: every pgoutput message class back to its wire bytes.

Written from the protocol documentation with its own format strings rather
than cdc.pgoutput._struct, so a wrong layout in the decoder cannot hide behind
the same wrong layout here. ``xid`` is written when it is not None (inside a
streamed block); abort_lsn/abort_time when set (protocol 4, parallel).

Text and binary column values both decode to ``bytes``, so which kind byte to
write is the caller's to say: ``binary=True`` writes 'b', otherwise 't'.
"""

from __future__ import annotations

from struct import pack

from cdc.pgoutput import (
    UNCHANGED,
    Begin,
    BeginPrepare,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Prepare,
    Relation,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    TupleData,
    Type,
    Update,
)


def encode(message: Message, *, binary: bool = False) -> bytes:
    m = message
    if isinstance(m, Begin):
        return b"B" + pack(">QqI", m.final_lsn, m.commit_time, m.xid)
    if isinstance(m, Commit):
        return b"C" + pack(">BQQq", m.flags, m.commit_lsn, m.end_lsn, m.commit_time)
    if isinstance(m, Origin):
        return b"O" + pack(">Q", m.commit_lsn) + _string(m.name)
    if isinstance(m, Relation):
        columns = b"".join(
            pack(">B", c.flags) + _string(c.name) + pack(">Ii", c.type_oid, c.type_modifier) for c in m.columns
        )
        return (b"R" + _xid(m.xid) + pack(">I", m.relation_id) + _string(m.namespace) + _string(m.name)
                + pack(">BH", m.replica_identity, len(m.columns)) + columns)
    if isinstance(m, Type):
        return b"Y" + _xid(m.xid) + pack(">I", m.type_oid) + _string(m.namespace) + _string(m.name)
    if isinstance(m, Insert):
        return b"I" + _xid(m.xid) + pack(">I", m.relation_id) + b"N" + _tuple(m.new, binary)
    if isinstance(m, Update):
        if m.old is not None and m.key is not None:
            raise ValueError("an Update carries an old row or an old key, not both")
        old = b"" if m.old is None else b"O" + _tuple(m.old, binary)
        key = b"" if m.key is None else b"K" + _tuple(m.key, binary)
        return b"U" + _xid(m.xid) + pack(">I", m.relation_id) + old + key + b"N" + _tuple(m.new, binary)
    if isinstance(m, Delete):
        if (m.old is None) == (m.key is None):
            raise ValueError("a Delete carries exactly one of an old row and an old key")
        old = b"O" + _tuple(m.old, binary) if m.old is not None else b"K" + _tuple(m.key or (), binary)
        return b"D" + _xid(m.xid) + pack(">I", m.relation_id) + old
    if isinstance(m, Truncate):
        return (b"T" + _xid(m.xid) + pack(">IB", len(m.relation_ids), m.options)
                + b"".join(pack(">I", oid) for oid in m.relation_ids))
    if isinstance(m, LogicalMessage):
        return (b"M" + _xid(m.xid) + pack(">BQ", m.flags, m.lsn) + _string(m.prefix)
                + pack(">I", len(m.content)) + m.content)
    if isinstance(m, StreamStart):
        return b"S" + pack(">IB", m.xid, 1 if m.first_segment else 0)
    if isinstance(m, StreamStop):
        return b"E"
    if isinstance(m, StreamCommit):
        return b"c" + pack(">IBQQq", m.xid, m.flags, m.commit_lsn, m.end_lsn, m.commit_time)
    if isinstance(m, StreamAbort):
        if m.abort_lsn is None and m.abort_time is None:
            return b"A" + pack(">II", m.xid, m.subxid)
        if m.abort_lsn is None or m.abort_time is None:
            raise ValueError("abort_lsn and abort_time come together")
        return b"A" + pack(">IIQq", m.xid, m.subxid, m.abort_lsn, m.abort_time)
    if isinstance(m, BeginPrepare):
        return b"b" + pack(">QQqI", m.prepare_lsn, m.end_lsn, m.prepare_time, m.xid) + _string(m.gid)
    if isinstance(m, (Prepare, StreamPrepare)):
        type_byte = b"P" if isinstance(m, Prepare) else b"p"
        return type_byte + pack(">BQQqI", m.flags, m.prepare_lsn, m.end_lsn, m.prepare_time, m.xid) + _string(m.gid)
    if isinstance(m, CommitPrepared):
        return b"K" + pack(">BQQqI", m.flags, m.commit_lsn, m.end_lsn, m.commit_time, m.xid) + _string(m.gid)
    if isinstance(m, RollbackPrepared):
        return (b"r" + pack(">BQQqqI", m.flags, m.prepare_end_lsn, m.rollback_end_lsn, m.prepare_time,
                             m.rollback_time, m.xid) + _string(m.gid))
    raise TypeError(f"not a pgoutput message: {message!r}")


def _xid(xid: int | None) -> bytes:
    return b"" if xid is None else pack(">I", xid)


def _string(text: str) -> bytes:
    if "\0" in text:
        raise ValueError("pgoutput strings are NUL-terminated and cannot contain NUL")
    return text.encode() + b"\0"


def _tuple(values: TupleData, binary: bool) -> bytes:
    parts = [pack(">H", len(values))]
    for value in values:
        if value is None:
            parts.append(b"n")
        elif value is UNCHANGED:
            parts.append(b"u")
        else:
            assert isinstance(value, bytes)
            parts.append((b"b" if binary else b"t") + pack(">I", len(value)) + value)
    return b"".join(parts)

"""One frozen class per pgoutput message (protocol versions 1 to 4).

Field names follow PostgreSQL's "Logical Replication Message Formats" page.
LSNs are unsigned 64-bit integers; timestamps are microseconds since
2000-01-01 00:00:00 UTC, exactly as on the wire (see ``pg_epoch_micros_to_datetime``).
``xid`` on change messages is set only inside a streamed block (protocol >= 2),
and it is the xid of the (sub)transaction that made the change: after a
SAVEPOINT it is the subtransaction's own xid, the one a Stream Abort's
``subxid`` names, not the top-level xid of the Stream Start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

# PostgreSQL counts time from 2000-01-01 00:00:00 UTC, this many seconds after the Unix epoch.
PG_EPOCH_UNIX: Final = 946_684_800
PG_EPOCH_UNIX_MICROS: Final = PG_EPOCH_UNIX * 1_000_000
PG_EPOCH: Final = datetime.fromtimestamp(PG_EPOCH_UNIX, timezone.utc)
_MICROSECOND: Final = timedelta(microseconds=1)


def pg_epoch_micros_to_datetime(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


def datetime_to_pg_epoch_micros(value: datetime) -> int:
    """Microseconds since PostgreSQL's epoch, exactly (floor), of a tz-aware datetime."""
    return (value - PG_EPOCH) // _MICROSECOND


def pg_now_micros() -> int:
    """Now, in microseconds since PostgreSQL's epoch."""
    return int((time.time() - PG_EPOCH_UNIX) * 1_000_000)


class _Unchanged:
    """An unchanged TOASTed value ('u'): the server did not send it."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

# One value per column: text ('t') and binary ('b') values as the raw bytes the
# server sent, None for NULL ('n'), UNCHANGED for an unchanged TOAST value ('u').
# Text and binary look alike here: with binary = true the server still sends
# text for a type without a send function, which nothing below records.
Value = bytes | None | _Unchanged
TupleData = tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    flags: int  # 1 = part of the replica identity key
    name: str
    type_oid: int
    type_modifier: int


@dataclass(frozen=True, slots=True)
class Relation:
    xid: int | None
    relation_id: int
    namespace: str  # '' stands for pg_catalog
    name: str
    replica_identity: int  # ord() of 'd', 'n', 'f' or 'i'
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    """A non-built-in column type. For a domain the server sends the domain's
    OID but its base type's namespace and name (e.g. '' and 'int4')."""

    xid: int | None
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    xid: int | None
    relation_id: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    xid: int | None
    relation_id: int
    old: TupleData | None  # 'O': the whole old row (REPLICA IDENTITY FULL)
    key: TupleData | None  # 'K': the old key columns
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    xid: int | None
    relation_id: int
    old: TupleData | None
    key: TupleData | None


@dataclass(frozen=True, slots=True)
class Truncate:
    xid: int | None
    options: int  # bit 1 = CASCADE, bit 2 = RESTART IDENTITY
    relation_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    xid: int | None
    flags: int  # bit 1 = transactional
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int
    abort_lsn: int | None  # protocol 4 with parallel streaming only
    abort_time: int | None


@dataclass(frozen=True, slots=True)
class BeginPrepare:
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class Prepare:
    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class CommitPrepared:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class RollbackPrepared:
    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: int
    rollback_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class StreamPrepare:
    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


Message = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate
    | LogicalMessage | StreamStart | StreamStop | StreamCommit | StreamAbort
    | BeginPrepare | Prepare | CommitPrepared | RollbackPrepared | StreamPrepare
)

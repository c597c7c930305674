"""pgoutput, PostgreSQL's logical replication protocol: one message in, one frozen object out.

    from cdc.pgoutput import decode, Insert

    message = decode(payload, in_stream=False)

``decode`` does no I/O and keeps no state; see ``cdc.pgoutput.decoder``.
"""

from __future__ import annotations

from .decoder import decode
from .errors import PgOutputError
from .messages import (
    UNCHANGED,
    Begin,
    BeginPrepare,
    Column,
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
    Value,
    pg_epoch_micros_to_datetime,
)

__all__ = [
    "UNCHANGED",
    "Begin",
    "BeginPrepare",
    "Column",
    "Commit",
    "CommitPrepared",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "PgOutputError",
    "Prepare",
    "Relation",
    "RollbackPrepared",
    "StreamAbort",
    "StreamCommit",
    "StreamPrepare",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleData",
    "Type",
    "Update",
    "Value",
    "decode",
    "pg_epoch_micros_to_datetime",
]

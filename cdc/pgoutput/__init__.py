"""pgoutput, PostgreSQL's logical replication protocol: one message in, one frozen object out.

    from cdc.pgoutput import decode, Insert

    message = decode(payload, in_stream=False)

``decode`` does no I/O and keeps no state; see ``cdc.pgoutput.decoder``.
``decode_insert_at`` is the hot path for the commonest message, an Insert,
read in place from a larger buffer; ``insert_run_at`` decodes a run of them;
``transactions_at`` finds and decodes whole small transactions. All are compiled when the accelerator is built (``cdc.accel``).
"""

from __future__ import annotations

from ._fast import decode_insert_at, insert_run_at, transactions_at
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
    "decode_insert_at",
    "insert_run_at",
    "pg_epoch_micros_to_datetime",
    "transactions_at",
]

"""Precompiled unpackers for the fixed-size parts of pgoutput messages.

Everything on the wire is big-endian ("network order"). Signedness follows the
server's C types, not the documentation's loose "Int32": LSNs (XLogRecPtr),
xids (TransactionId) and OIDs are unsigned, timestamps (TimestampTz) and type
modifiers are signed. Lengths of values are read unsigned on purpose: a
negative Int32 then becomes a number larger than any message, so a single
"does it fit" comparison rejects both overruns and negative lengths.
"""

from __future__ import annotations

from struct import Struct
from typing import Final

NOTHING: Final = Struct(">")  # Stream Stop has no body
U16: Final = Struct(">H")  # column counts (the server writes uint16)
U32: Final = Struct(">I")  # relation OID, xid, value length
U32_U32: Final = Struct(">II")  # streamed xid + relation OID
U64: Final = Struct(">Q")  # an LSN

BEGIN: Final = Struct(">QqI")  # final_lsn, commit_time, xid
COMMIT: Final = Struct(">BQQq")  # flags, commit_lsn, end_lsn, commit_time
COLUMN_TYPE: Final = Struct(">Ii")  # type OID, type modifier (-1 = none)
MESSAGE_HEAD: Final = Struct(">BQ")  # flags, lsn
TRUNCATE_HEAD: Final = Struct(">IB")  # number of relations, options

STREAM_START: Final = Struct(">IB")  # xid, first_segment
STREAM_COMMIT: Final = Struct(">IBQQq")  # xid, flags, commit_lsn, end_lsn, commit_time
STREAM_ABORT: Final = Struct(">II")  # xid, subxid
STREAM_ABORT_PARALLEL: Final = Struct(">IIQq")  # ... + abort_lsn, abort_time

BEGIN_PREPARE: Final = Struct(">QQqI")  # prepare_lsn, end_lsn, prepare_time, xid
# Prepare, Stream Prepare and Commit Prepared share one layout:
# flags, lsn, end_lsn, timestamp, xid.
PREPARE: Final = Struct(">BQQqI")
ROLLBACK_PREPARED: Final = Struct(">BQQqqI")  # flags, prepare_end_lsn, rollback_end_lsn, prepare_time, rollback_time, xid

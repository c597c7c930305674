"""The streaming replication sub-protocol carried in CopyData messages. No I/O here.

Server to client: XLogData ('w') wraps one pgoutput message; Primary keepalive
('k') reports the server's position and may ask for a reply. Client to server:
Standby status update ('r') reports how far we have written, flushed, applied.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Final, Union

_XLOGDATA: Final = struct.Struct("!QQq")       # wal_start, wal_end, send_time
_KEEPALIVE: Final = struct.Struct("!Qq?")      # wal_end, send_time, reply_requested
_STATUS: Final = struct.Struct("!cQQQq?")      # 'r', written, flushed, applied, client_time, reply

XLOGDATA_HEADER_SIZE: Final = 1 + _XLOGDATA.size  # 'w' + wal_start, wal_end, send_time

# Seconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
_PG_EPOCH_OFFSET: Final = 946_684_800


class ReplicationProtocolError(Exception):
    """A CopyData message that is not XLogData or a keepalive, or is cut short."""


@dataclass(frozen=True, slots=True)
class XLogData:
    wal_start: int
    wal_end: int
    send_time: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    send_time: int
    reply_requested: bool


Frame = Union[XLogData, Keepalive]


def parse_copy_data(data: memoryview) -> Frame:
    kind = data[:1].tobytes()
    if kind == b"w":
        if len(data) < 1 + _XLOGDATA.size:
            raise ReplicationProtocolError(f"XLogData of {len(data)} bytes is shorter than its header")
        wal_start, wal_end, send_time = _XLOGDATA.unpack_from(data, 1)
        return XLogData(wal_start, wal_end, send_time, data[1 + _XLOGDATA.size:])
    if kind == b"k":
        if len(data) != 1 + _KEEPALIVE.size:
            raise ReplicationProtocolError(f"keepalive of {len(data)} bytes, expected {1 + _KEEPALIVE.size}")
        return Keepalive(*_KEEPALIVE.unpack_from(data, 1))
    raise ReplicationProtocolError(f"unknown replication message type {kind!r}")


def pg_now_micros() -> int:
    return int((time.time() - _PG_EPOCH_OFFSET) * 1_000_000)


def standby_status_update(flushed: int, *, reply: bool = False, now_micros: int | None = None) -> bytes:
    """Report ``flushed`` as written, flushed and applied: we only ever report what is stored."""
    client_time = pg_now_micros() if now_micros is None else now_micros
    return _STATUS.pack(b"r", flushed, flushed, flushed, client_time, reply)

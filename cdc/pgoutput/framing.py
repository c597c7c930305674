"""The streaming replication sub-protocol carried in CopyData messages, and the pgoutput inside it. No I/O here.

Server to client: XLogData ('w') wraps one pgoutput message after a 25-byte
header; Primary keepalive ('k') reports the server's position and may ask for a
reply. Client to server: Standby status update ('r') reports how far we have
written, flushed, applied.

``FrameDecoder`` takes a read's frames as they came off the connection and
hands on what they carry, in order: runs of Inserts decoded in place (the hot
path: no slice, no message object per row), every other message decoded
whole, and keepalives.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

# The package's, not _tuples' own: whichever implementation the package exports.
from . import decode, insert_run_at, transactions_at
from ._groups import Txn as Txn  # the receivers' type for a group's transactions
from ._struct import BEGIN as _BEGIN, COMMIT as _COMMIT  # final_lsn, commit_time, xid; flags, LSNs, commit_time
from .messages import Message, StreamStart, StreamStop, TupleData, pg_now_micros

_XLOGDATA: Final = struct.Struct("!QQq")       # wal_start, wal_end, send_time
_KEEPALIVE: Final = struct.Struct("!Qq?")      # wal_end, send_time, reply_requested
_STATUS: Final = struct.Struct("!cQQQq?")      # 'r', written, flushed, applied, client_time, reply

XLOGDATA_HEADER_SIZE: Final = 1 + _XLOGDATA.size  # 'w' + wal_start, wal_end, send_time
_XLOGDATA_TYPE: Final = ord("w")
_INSERT_TYPE: Final = ord("I")  # the pgoutput message type, at XLOGDATA_HEADER_SIZE
# Begin and Commit, once per transaction: read in place when they have their one
# valid size (anything else goes through decode, which says what is wrong).
_BEGIN_TYPE: Final = ord("B")
_COMMIT_TYPE: Final = ord("C")
_BEGIN_FRAME: Final = XLOGDATA_HEADER_SIZE + 1 + _BEGIN.size
_COMMIT_FRAME: Final = XLOGDATA_HEADER_SIZE + 1 + _COMMIT.size
# At most this many Inserts make a small transaction, handed on in a group (FrameDecoder); the batch
# builder (cdc.core.buffer) sends runs that long straight into its columns, not through its wait.
SMALL_TRANSACTION: Final = 256


class ReplicationProtocolError(Exception):
    """A CopyData message that is not XLogData or a keepalive, or is cut short."""


@dataclass(frozen=True, slots=True)
class XLogData:
    wal_start: int
    wal_end: int
    send_time: int
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    send_time: int
    reply_requested: bool


Frame = XLogData | Keepalive


def parse_copy_data(data: bytes | memoryview) -> Frame:
    kind = bytes(data[:1])
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


def standby_status_update(flushed: int, *, reply: bool = False, now_micros: int | None = None) -> bytes:
    """Report ``flushed`` as written, flushed and applied: we only ever report what is stored."""
    client_time = pg_now_micros() if now_micros is None else now_micros
    return _STATUS.pack(b"r", flushed, flushed, flushed, client_time, reply)


class Receiver(Protocol):
    """Where a FrameDecoder hands the pgoutput messages, in stream order."""

    def feed(self, message: Message) -> None:
        """Any message but a run's Inserts."""
        ...

    def insert_run(self, relation_id: int, tuples: list[TupleData]) -> None:
        """The new tuples of consecutive Inserts into one relation, outside a streamed block."""
        ...

    def begin_at(self, final_lsn: int, commit_time: int) -> None:
        """``feed(Begin(final_lsn, commit_time, xid))``, without making the message."""
        ...

    def commit_at(self, end_lsn: int) -> None:
        """``feed(Commit(...))`` with that end LSN, without making the message."""
        ...

    def transactions(self, relation_id: int, tuples: list[TupleData], txns: list[Txn]) -> None:
        """Whole transactions in a row, each a Begin, Inserts into one relation, a Commit: ``tuples`` holds
        their rows in order, ``txns`` each one's (rows, final_lsn, commit_time, end_lsn)."""
        ...


class FrameDecoder:
    """Decodes one replication stream's frames in order; one per connection.

    It keeps the one piece of state the bytes do not carry: whether a streamed
    block is open (between Stream Start and Stream Stop its messages carry an
    xid, so they are decoded one by one, never as a run).
    """

    def __init__(self, receiver: Receiver, keepalive: Callable[[Keepalive], None]) -> None:
        self.in_stream = False
        self._feed = receiver.feed
        self._insert_run = receiver.insert_run
        self._begin_at = receiver.begin_at
        self._commit_at = receiver.commit_at
        self._transactions = receiver.transactions
        self._keepalive = keepalive

    def decode(self, frames: Sequence[bytes | memoryview]) -> None:
        """Hand on what one read's frames carry; a frame that does not decode raises where it stands."""
        feed, insert_run, run_at = self._feed, self._insert_run, insert_run_at
        xlogdata, insert, offset = _XLOGDATA_TYPE, _INSERT_TYPE, XLOGDATA_HEADER_SIZE
        begin_type, begin_frame, begin_at, unpack_begin = _BEGIN_TYPE, _BEGIN_FRAME, self._begin_at, _BEGIN.unpack_from
        commit_type, commit_frame, commit_at, unpack_commit = (
            _COMMIT_TYPE, _COMMIT_FRAME, self._commit_at, _COMMIT.unpack_from)
        in_stream = self.in_stream
        i, n = 0, len(frames)
        while i < n:
            data = frames[i]
            if data[0] == xlogdata:
                if not in_stream and len(data) > offset:
                    kind = data[offset]
                    if kind == insert:
                        # The hot path: the Inserts of one relation from here on, in one call.
                        relation_id, run, i = run_at(frames, i, offset)
                        insert_run(relation_id, run)
                        continue
                    # Small transactions: their Begin and Commit cost as much as their rows.
                    if kind == begin_type and len(data) == begin_frame:
                        after = self._whole_transactions(frames, i)
                        if after != i:
                            i = after
                            continue
                        final_lsn, commit_time, _ = unpack_begin(data, offset + 1)
                        begin_at(final_lsn, commit_time)
                        i += 1
                        continue
                    if kind == commit_type and len(data) == commit_frame:
                        commit_at(unpack_commit(data, offset + 1)[2])
                        i += 1
                        continue
                # (A frame too short to hold a message type decodes as an empty message: an error.)
                message = decode(data[offset:], in_stream=in_stream)
                if type(message) is StreamStart:
                    in_stream = self.in_stream = True
                elif type(message) is StreamStop:
                    in_stream = self.in_stream = False
                feed(message)
            else:
                frame = parse_copy_data(data)
                if type(frame) is Keepalive:
                    self._keepalive(frame)
            i += 1

    def _whole_transactions(self, frames: Sequence[bytes | memoryview], start: int) -> int:
        """Hand on, in one call, the whole transactions of Inserts into one relation from ``frames[start]`` (a
        Begin) on, then the keepalives between them; returns the index of the first frame not handed on.

        Live traffic is many small transactions: one call for a read's worth of them, not three per
        transaction, lets the collector convert, deduplicate and buffer them together. Anything else ends
        the group before its transaction (see ``transactions_at``), and the usual path takes it from there,
        errors included.
        """
        relation_id, tuples, txns, keepalive, done = transactions_at(
            frames, start, XLOGDATA_HEADER_SIZE, SMALL_TRANSACTION)
        if done == start:
            return start
        if relation_id == -1:  # only empty transactions: nothing for a relation, just their commits
            for _, final_lsn, commit_time, end_lsn in txns:
                self._begin_at(final_lsn, commit_time)
                self._commit_at(end_lsn)
        else:
            self._transactions(relation_id, tuples, txns)
        # Keepalives come after the rows they followed: a position they report is never taken for one of
        # rows not yet handed on. One after the last commit is left to the usual path, in its turn.
        if keepalive is not None:
            self._keepalive(Keepalive(*keepalive))
        return done

"""The CopyData sub-protocol of streaming replication: what the server sends, what we answer."""

from __future__ import annotations

import struct

import pytest

from cdc.pgoutput.framing import (
    XLOGDATA_HEADER_SIZE,
    Keepalive,
    ReplicationProtocolError,
    XLogData,
    parse_copy_data,
    standby_status_update,
)


def test_xlogdata_carries_positions_and_the_pgoutput_payload_after_its_header() -> None:
    frame = b"w" + struct.pack("!QQq", 0x16_0000_0010, 0x16_0000_0020, 42) + b"Bpayload"
    parsed = parse_copy_data(memoryview(frame))
    assert isinstance(parsed, XLogData)
    assert (parsed.wal_start, parsed.wal_end, parsed.send_time) == (0x16_0000_0010, 0x16_0000_0020, 42)
    assert bytes(parsed.payload) == b"Bpayload" == frame[XLOGDATA_HEADER_SIZE:]


def test_keepalive_says_whether_the_server_wants_an_answer() -> None:
    parsed = parse_copy_data(memoryview(b"k" + struct.pack("!Qq?", 99, 7, True)))
    assert parsed == Keepalive(wal_end=99, send_time=7, reply_requested=True)


@pytest.mark.parametrize("frame", [b"", b"x123", b"w" + b"\0" * 10, b"k" + b"\0" * 5])
def test_anything_else_is_a_defined_error(frame: bytes) -> None:
    with pytest.raises(ReplicationProtocolError):
        parse_copy_data(memoryview(frame))


def test_status_update_reports_the_stored_position_as_written_flushed_and_applied() -> None:
    message = standby_status_update(0x1_0000_0000, reply=True, now_micros=123)
    kind, written, flushed, applied, clock, reply = struct.unpack("!cQQQq?", message)
    assert (kind, written, flushed, applied, clock, reply) == (b"r", 0x1_0000_0000, 0x1_0000_0000, 0x1_0000_0000, 123, True)

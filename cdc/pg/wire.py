"""PostgreSQL's backend messages during START_REPLICATION's COPY, as bytes: no I/O here.

A backend message is a type byte, a big-endian 4-byte length that counts
itself but not the type, and a body. In COPY BOTH the server sends each
replication message as CopyData ('d'); it may also send a notice ('N') or a
parameter status ('S'), and it ends with CopyDone ('c') or an error ('E').
cdc.pg.copy_stream reads these from the socket itself; ``copy_frames`` takes
a read's CopyData payloads in one call, compiled where the accelerator is
built (cdc/_accel_wire.c), which must give the same results and errors.
"""

from __future__ import annotations

import operator
from struct import Struct
from typing import Final, NamedTuple

from ..accel import native

COPY_DATA: Final = 0x64  # 'd'
COPY_DONE: Final = 0x63  # 'c'
COPY_BOTH_RESPONSE: Final = 0x57  # 'W'
ERROR_RESPONSE: Final = 0x45  # 'E'
NOTICE_RESPONSE: Final = 0x4E  # 'N'
PARAMETER_STATUS: Final = 0x53  # 'S'
NOTIFICATION: Final = 0x41  # 'A'

HEADER: Final = Struct(">BI")  # type, length (itself included)
HEADER_SIZE: Final = HEADER.size


class WireError(Exception):
    """A backend message no server sends: the connection is not speaking PostgreSQL's protocol."""


class Message(NamedTuple):
    kind: int  # the type byte
    body: int  # where its body starts
    end: int  # where the next message starts


def copy_frames_reference(
    buf: object, start: int, end: int, max_messages: int, max_bytes: int
) -> tuple[list[bytes], int, int]:
    """The CopyData payloads of the whole messages in ``buf[start:end]``, as bytes, in order.

    Stops before a message that is not CopyData or is cut short by ``end``,
    after ``max_messages`` payloads, or after the one that brings their size to
    ``max_bytes``. Returns the payloads, where it stopped, and their total size.
    """
    if type(buf) is not bytes and type(buf) is not bytearray:
        raise TypeError(f"copy_frames: buf must be bytes or bytearray, not {type(buf).__name__}")
    start, end = operator.index(start), operator.index(end)
    max_messages, max_bytes = operator.index(max_messages), operator.index(max_bytes)
    if not 0 <= start <= end <= len(buf):
        raise ValueError("copy_frames: needs 0 <= start <= end <= len(buf)")
    out: list[bytes] = []
    pos, size = start, 0
    unpack = HEADER.unpack_from
    while len(out) < max_messages and size < max_bytes and end - pos >= HEADER_SIZE:
        kind, length = unpack(buf, pos)
        if kind != COPY_DATA or length < 4 or length > end - pos - 1:
            break
        out.append(bytes(buf[pos + HEADER_SIZE:pos + 1 + length]))
        size += length - 4
        pos += 1 + length
    return out, pos, size


copy_frames: Final = copy_frames_reference if native is None else native.copy_frames


def message_at(buf: bytes | bytearray | memoryview, start: int, end: int) -> Message | None:
    """The message at ``buf[start:]`` when it is all before ``end``; None when not yet.

    WireError for a length no message has (below 4).
    """
    if end - start < HEADER_SIZE:
        return None
    kind, length = HEADER.unpack_from(buf, start)
    if length < 4:
        raise WireError(f"a backend message of type {kind:#04x} says it is {length} bytes long (at least 4)")
    if 1 + length > end - start:
        return None
    return Message(kind, start + HEADER_SIZE, start + 1 + length)


def needed(buf: bytes | bytearray | memoryview, start: int, end: int) -> int:
    """How many bytes from ``start`` the next message needs (its header's worth when the header is cut)."""
    if end - start < HEADER_SIZE:
        return HEADER_SIZE
    return 1 + int(HEADER.unpack_from(buf, start)[1])


def error_fields(body: bytes | bytearray | memoryview) -> dict[str, str]:
    """An ErrorResponse's or NoticeResponse's fields by code ('S' severity, 'C' SQLSTATE, 'M' message...)."""
    fields: dict[str, str] = {}
    data = bytes(body)
    pos = 0
    while pos < len(data) and data[pos] != 0:
        stop = data.find(b"\0", pos + 1)
        if stop < 0:
            break
        fields[chr(data[pos])] = data[pos + 1:stop].decode("utf-8", "replace")
        pos = stop + 1
    return fields


def error_text(fields: dict[str, str]) -> str:
    """One line, as libpq words it: "ERROR: message DETAIL: ... HINT: ..."."""
    parts = [f"{fields.get('S', 'ERROR')}: {fields.get('M', 'no message')}"]
    parts += [f"{label}: {fields[code]}" for code, label in (("D", "DETAIL"), ("H", "HINT")) if code in fields]
    return " ".join(" ".join(parts).split())


def copy_data(payload: bytes) -> bytes:
    """``payload`` as a CopyData message, to send."""
    return HEADER.pack(COPY_DATA, 4 + len(payload)) + payload

"""Reading pgoutput fields carefully, and the errors that say where decoding stopped.

Every ``PgOutputError`` the decoder raises is built here, at the offset where
decoding stopped: the start of the field that is cut short or invalid, or the
first byte of trailing garbage. ``_Cursor`` is the careful, bounds-checked
reader for messages that come once per transaction or rarer; the hot path in
``_tuples`` reads optimistically and uses these helpers only to explain a
failure.
"""

from __future__ import annotations

from struct import Struct, calcsize
from typing import Any, Final, TypeVar

from . import _struct
from .errors import PgOutputError

_M = TypeVar("_M")

_MAX_INT32: Final = 0x7FFFFFFF


def _error(buf: bytes, offset: int, reason: str) -> PgOutputError:
    return PgOutputError(reason, offset=offset, message_type=chr(buf[0]))


def _short(buf: bytes, st: Struct, pos: int, what: str) -> PgOutputError:
    """``st`` does not fit at ``pos``: point at the first of its fields that is cut."""
    offset = pos
    for i in range(2, len(st.format) + 1):
        if pos + calcsize(st.format[:i]) > len(buf):
            break
        offset = pos + calcsize(st.format[:i])
    return _error(buf, offset, f"message ends inside {what} ({len(buf) - pos} of {st.size} bytes present)")


def _trailing(buf: bytes, pos: int) -> PgOutputError:
    return _error(buf, pos, f"{len(buf) - pos} unexpected trailing byte(s)")


def _overrun(buf: bytes, pos: int, length: int, what: str) -> PgOutputError:
    if length > _MAX_INT32:  # read unsigned, sent as a negative Int32
        return _error(buf, pos - 4, f"{what} has negative length {length - (1 << 32)}")
    return _error(buf, pos, f"{what} of {length} bytes runs past the end ({len(buf) - pos} bytes left)")


class _Cursor:
    """Reads fields left to right; every failure names the offset it reached."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 1  # past the type byte

    def fail(self, reason: str, offset: int | None = None) -> PgOutputError:
        return _error(self.buf, self.pos if offset is None else offset, reason)

    def fixed(self, st: Struct, what: str) -> tuple[Any, ...]:
        pos = self.pos
        if pos + st.size > len(self.buf):
            raise _short(self.buf, st, pos, what)
        self.pos = pos + st.size
        return st.unpack_from(self.buf, pos)

    def u32(self, what: str) -> int:
        return int(self.fixed(_struct.U32, what)[0])

    def xid(self, in_stream: bool) -> int | None:
        return self.u32("xid") if in_stream else None

    def byte(self, what: str) -> int:
        if self.pos >= len(self.buf):
            raise self.fail(f"message ends before {what}")
        self.pos += 1
        return self.buf[self.pos - 1]

    def string(self, what: str) -> str:
        buf, pos = self.buf, self.pos
        nul = buf.find(0, pos)
        if nul < 0:
            raise self.fail(f"{what} is not NUL-terminated")
        try:
            text = buf[pos:nul].decode()
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 ({exc.reason})", pos + exc.start) from None
        self.pos = nul + 1
        return text

    def counted(self, what: str) -> bytes:
        length = self.u32(f"length of {what}")
        start = self.pos
        if start + length > len(self.buf):
            raise _overrun(self.buf, start, length, what)
        self.pos = start + length
        return self.buf[start : self.pos]

    def done(self, message: _M) -> _M:
        if self.pos != len(self.buf):
            raise _trailing(self.buf, self.pos)
        return message

"""Where a replication stream's messages come from: libpq, or the connection's socket read by cdc.

Both give ``take`` (the CopyData payloads already here, none waited for),
``fill`` (read what the socket holds, without waiting) and ``send``. libpq
copies every message into an allocation of its own, and psycopg wraps each in
three objects: at live traffic's ~1.6 messages an event, a cost that showed in
the profile (bench/RESULTS.md, issue 15). ``SocketCopy`` reads the socket into
one reused buffer and takes a read's payloads in one call. It is chosen when
the connection is not encrypted (TLS and GSS bytes are libpq's to decrypt) and
the accelerator is built; libpq still opens, authenticates and closes the
connection, and sends START_REPLICATION, whose answer it never reads.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Sequence
from typing import Final

from psycopg import pq

from . import wire

Frame = bytes | memoryview  # a CopyData payload: bytes from the socket, a view of libpq's copy

_BUFFER: Final = 256 << 10  # a read's worth (the session takes ~96 KB at a time) and more
_ROOM: Final = 32 << 10  # less free space than this at the end: move what is left to the front


class CopyEnded(Exception):
    """The COPY is over: the server ended it (``clean``), reported an error, or the connection broke.

    ``refused``: the server answered START_REPLICATION with an error, so the COPY never began.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None, clean: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.clean = clean
        self.refused = refused


def libpq_error(pgconn: pq.abc.PGconn, result: pq.abc.PGresult | None) -> tuple[str, str | None]:
    """What libpq says went wrong, and the SQLSTATE when the server sent one (not yet scrubbed of secrets)."""
    if result is not None and result.error_message:
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        return result.error_message.decode("utf-8", "replace"), sqlstate.decode() if sqlstate else None
    return pgconn.get_error_message(), None


class LibpqCopy:
    name: Final = "libpq"

    def __init__(self, pgconn: pq.abc.PGconn) -> None:
        self._pgconn = pgconn
        self.fileno: Final = pgconn.socket
        self._ended: CopyEnded | None = None  # an end met after messages, raised by the next take

    def take(self, max_messages: int, max_bytes: int) -> tuple[Sequence[Frame], int]:
        if self._ended is not None:
            raise self._ended
        get = self._pgconn.get_copy_data
        out: list[Frame] = []
        size = 0
        while len(out) < max_messages and size < max_bytes:
            nbytes, data = get(1)
            if nbytes > 0:
                out.append(data)
                size += nbytes
                continue
            if nbytes < 0:
                # The messages before the end are handed on first; libpq says why it ended only now.
                self._ended = self._end(nbytes)
                if not out:
                    raise self._ended
            break
        return out, size

    def fill(self) -> None:
        self._pgconn.consume_input()

    def _end(self, nbytes: int) -> CopyEnded:
        result = self._pgconn.get_result()
        if nbytes == -1 and (result is None or result.status == pq.ExecStatus.COMMAND_OK):
            return CopyEnded("the server ended the replication stream", clean=True)
        text, sqlstate = libpq_error(self._pgconn, result)
        return CopyEnded(f"the replication stream broke: {text}", sqlstate=sqlstate)

    def send(self, data: bytes) -> None:
        pgconn = self._pgconn
        while pgconn.put_copy_data(data) == 0:
            select.select([], [pgconn.socket], [], 1.0)
        while pgconn.flush() == 1:
            select.select([pgconn.socket], [pgconn.socket], [], 1.0)
            pgconn.consume_input()

    def close(self) -> None:
        """Nothing of its own to close: the connection is libpq's."""


class SocketCopy:
    name: Final = "socket"

    def __init__(self, fileno: int) -> None:
        # A duplicate descriptor: closing ours leaves libpq's, which closes the connection.
        self._sock = socket.socket(fileno=os.dup(fileno))
        self._sock.setblocking(False)
        self.fileno: Final = self._sock.fileno()
        self._buf = bytearray(_BUFFER)
        self._start = self._end = 0

    @staticmethod
    def usable(pgconn: pq.abc.PGconn) -> bool:
        """Whether the socket carries the protocol in the clear (no TLS, no GSS encryption)."""
        return not pgconn.ssl_in_use and not pgconn.used_gssapi

    def start(self, pgconn: pq.abc.PGconn, command: bytes) -> None:
        """Send ``command`` through libpq and read its answer here: CopyEnded unless the server enters COPY BOTH."""
        pgconn.send_query(command)
        while pgconn.flush() == 1:
            select.select([], [self.fileno], [], 1.0)
        while True:
            message = self._message()
            if message is None:
                select.select([self.fileno], [], [])
                self.fill()
                continue
            self._start = message.end
            if message.kind == wire.COPY_BOTH_RESPONSE:
                return
            if message.kind == wire.ERROR_RESPONSE:
                fields = self._fields(message)
                raise CopyEnded(wire.error_text(fields), sqlstate=fields.get("C"), refused=True)
            # A notice or a parameter status before the COPY: nothing to act on.

    def take(self, max_messages: int, max_bytes: int) -> tuple[Sequence[Frame], int]:
        out, self._start, size = wire.copy_frames(self._buf, self._start, self._end, max_messages, max_bytes)
        if out or self._start == self._end:
            return out, size
        message = self._message()
        if message is None:
            return out, size  # the next message is not all here yet
        self._start = message.end
        if message.kind == wire.ERROR_RESPONSE:
            fields = self._fields(message)
            raise CopyEnded(f"the replication stream broke: {wire.error_text(fields)}", sqlstate=fields.get("C"))
        if message.kind == wire.COPY_DONE:
            raise CopyEnded("the server ended the replication stream", clean=True)
        if message.kind in (wire.NOTICE_RESPONSE, wire.PARAMETER_STATUS, wire.NOTIFICATION):
            return self.take(max_messages, max_bytes)
        raise CopyEnded(f"the replication stream broke: a backend message of type {message.kind:#04x} in the COPY")

    def fill(self) -> None:
        """Read what the socket holds now, if anything (never waits); CopyEnded when the connection is gone."""
        self._make_room()
        try:
            n = self._sock.recv_into(memoryview(self._buf)[self._end:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise CopyEnded(f"lost the replication connection: {exc.strerror or exc}") from None
        if n == 0:
            raise CopyEnded("lost the replication connection: the server closed it")
        self._end += n

    def _make_room(self) -> None:
        """Free space after the data for a read: at least _ROOM, and what the next message lacks to be whole."""
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
            if len(self._buf) > _BUFFER:
                self._buf = bytearray(_BUFFER)  # one large message made it grow; let it go
            return
        want = max(wire.needed(self._buf, start, end) - (end - start), _ROOM)
        if len(self._buf) - end >= want:
            return
        if start:
            self._buf[:end - start] = self._buf[start:end]
            self._start, self._end = 0, end - start
        if len(self._buf) - self._end < want:
            self._buf.extend(bytes(want - (len(self._buf) - self._end)))

    def _message(self) -> wire.Message | None:
        try:
            return wire.message_at(self._buf, self._start, self._end)
        except wire.WireError as exc:
            raise CopyEnded(f"the replication stream broke: {exc}") from None

    def _fields(self, message: wire.Message) -> dict[str, str]:
        return wire.error_fields(self._buf[message.body:message.end])

    def send(self, data: bytes) -> None:
        view = memoryview(wire.copy_data(data))
        while view:
            try:
                view = view[self._sock.send(view):]
            except (BlockingIOError, InterruptedError):
                # Read while waiting: a server blocked on sending to us would not read this.
                ready = select.select([self.fileno], [self.fileno], [], 1.0)
                if ready[0]:
                    self.fill()
            except OSError as exc:
                raise CopyEnded(f"lost the replication connection: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._sock.close()

"""A logical replication connection over psycopg's low-level libpq wrapper, and how a stream starts.

This module and cdc.pg.copy_stream (where the stream's messages come from:
the socket, read by cdc, or libpq) are the only ones that do replication I/O.
``read`` returns every CopyData message already available (many per
wake-up), and waits on the socket only when there is none. ``start_stream``
checks the slot and starts streaming it with the options cdc uses.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..accel import native
from ..core.outbox_binary import binary_readable
from ..errors import PreflightError, SlotBusy
from ..pgoutput.framing import standby_status_update
from ..redact import dsn_password, scrub
from ..settings import Settings
from . import preflight
from .connect import connect, startup_options
from .copy_stream import CopyEnded, Frame, LibpqCopy, SocketCopy, libpq_error
from .monitor import MESSAGES_SINCE


# How long closing waits for the server to close its end (its walsender has then released the slot).
_RELEASE_WAIT: Final = 5.0


class ReplicationError(Exception):
    """The server refused a replication command or the stream broke."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class StreamEnded(ReplicationError):
    """The server ended the COPY stream (it is shutting down, or our walsender was terminated)."""


def replication_conninfo(dsn: str, *, application_name: str) -> str:
    # Text values arrive formatted by the walsender's session settings: the same pinned ones as every connection.
    params = conninfo_to_dict(dsn)
    params.setdefault("application_name", application_name)
    options = startup_options(str(params.get("options") or ""))
    return make_conninfo("", **{**params, "replication": "database", "options": options})


def _error_text(pgconn: pq.abc.PGconn, result: pq.abc.PGresult | None, secret: str | None) -> tuple[str, str | None]:
    text, state = libpq_error(pgconn, result)
    return scrub(" ".join(text.split()), secret), state


class ReplicationConnection:
    def __init__(self, pgconn: pq.abc.PGconn, *, secret: str | None) -> None:
        self._pgconn = pgconn
        self._secret = secret
        self.server_version: Final = pgconn.server_version
        self.backend_pid: Final = pgconn.backend_pid
        self.arrived_at = 0.0  # time.monotonic() when the last read's data had arrived (at the latest)
        self._copy: LibpqCopy | SocketCopy | None = None  # the stream's messages, once started
        self._ended: CopyEnded | None = None  # met by a read that had messages to return first

    @classmethod
    def connect(cls, dsn: str, *, application_name: str = "cdc") -> ReplicationConnection:
        secret = dsn_password(dsn)
        pgconn = pq.PGconn.connect(replication_conninfo(dsn, application_name=application_name).encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = scrub(" ".join(pgconn.get_error_message().split()), secret)
            pgconn.finish()
            raise ReplicationError(f"cannot open a replication connection: {message}")
        return cls(pgconn, secret=secret)

    @property
    def reader(self) -> str | None:
        """How the stream is read once started: "socket" (by cdc) or "libpq"."""
        return None if self._copy is None else self._copy.name

    def command(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run a replication command (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT...) and return its rows."""
        result = self._pgconn.exec_(sql.encode())
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            message, state = _error_text(self._pgconn, result, self._secret)
            raise ReplicationError(message, sqlstate=state)
        return [
            tuple(None if (v := result.get_value(r, c)) is None else bytes(v).decode() for c in range(result.nfields))
            for r in range(result.ntuples)
        ]

    def start_replication(self, slot: str, start_lsn: str, options: dict[str, str], *, reader: str = "auto") -> None:
        """Enter COPY BOTH mode. ``slot`` must already be a validated identifier.

        ``reader``: "auto" reads the stream from the socket itself where it can
        (cdc.pg.copy_stream), "libpq" always through libpq.
        """
        opts = ", ".join(f"\"{k}\" '{v}'" for k, v in options.items())
        command = f'START_REPLICATION SLOT "{slot}" LOGICAL {start_lsn} ({opts})'.encode()
        if reader == "auto" and native is not None and SocketCopy.usable(self._pgconn):
            copy = SocketCopy(self._pgconn.socket)
            try:
                with self._io():
                    copy.start(self._pgconn, command)
            except BaseException:
                copy.close()
                raise
            self._copy = copy
            return
        result = self._pgconn.exec_(command)
        if result.status != pq.ExecStatus.COPY_BOTH:
            message, state = _error_text(self._pgconn, result, self._secret)
            raise ReplicationError(message, sqlstate=state)
        self._pgconn.nonblocking = 1
        self._copy = LibpqCopy(self._pgconn)

    @contextmanager
    def _io(self) -> Iterator[None]:
        # libpq reports a dropped connection as an OperationalError: make it a stream end.
        try:
            yield
        except psycopg.Error as exc:
            raise StreamEnded(f"lost the replication connection: {scrub(' '.join(str(exc).split()), self._secret)}") from None
        except CopyEnded as exc:
            text = scrub(" ".join(str(exc).split()), self._secret)
            if exc.refused:
                raise ReplicationError(text, sqlstate=exc.sqlstate) from None
            raise StreamEnded(text, sqlstate=exc.sqlstate) from None

    def read(
        self, max_messages: int, timeout: float, max_bytes: int = 1 << 62, *, settle: float = 0.0
    ) -> list[Frame]:
        """Every available CopyData payload, up to ``max_messages`` or just past ``max_bytes``.

        Waits at most ``timeout`` for the first. Once something arrives after a
        wait, waits ``settle`` seconds more before reading it, but never past
        ``timeout``: live traffic's small transactions then come several to a
        wake-up instead of one each, and a batch due at ``timeout`` is not
        held back (a drain never waits, so it never settles). ``arrived_at``
        then says when the data came, before the settle.
        """
        with self._io():
            if self._ended is not None:
                raise self._ended
            return self._read(max_messages, timeout, max_bytes, settle)

    def _read(self, max_messages: int, timeout: float, max_bytes: int, settle: float = 0.0) -> list[Frame]:
        copy = self._copy
        if copy is None:
            raise ReplicationError("read before start_replication")
        out: list[Frame] = []
        waited = refilled = False
        size = 0
        self.arrived_at = now = time.monotonic()
        deadline = now + timeout
        while len(out) < max_messages and size < max_bytes:
            try:
                frames, nbytes = copy.take(max_messages - len(out), max_bytes - size)
            except CopyEnded as exc:
                if not out:
                    raise
                self._ended = exc  # the messages before the end are decoded first; the next read ends
                break
            if frames:
                out += frames
                size += nbytes
                refilled = False
                continue
            if out:
                if refilled:
                    break
                # What else has arrived (no wait): one wake-up then handles a backlog's
                # thousands of messages, not just what the first socket read brought.
                copy.fill()
                refilled = True
                continue
            if waited:
                break
            waited = True
            if select.select([copy.fileno], [], [], timeout)[0]:
                self.arrived_at = time.monotonic()
                if settle > 0:
                    time.sleep(max(0.0, min(settle, deadline - time.monotonic())))
                copy.fill()
        return out

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        self._send(standby_status_update(flushed, reply=reply))

    def _send(self, data: bytes) -> None:
        if self._copy is None:
            raise ReplicationError("status update before start_replication")
        with self._io():
            self._copy.send(data)

    def close(self, release_wait: float = _RELEASE_WAIT) -> None:
        """Close the connection, then wait up to ``release_wait`` seconds for the server to close its end.

        The walsender releases its slot as it exits, a moment after our Terminate; the server closes
        the connection after that. Waiting for it means that whoever uses the slot next (a script
        dropping it after ``cdc run --until-lsn``, or our own reconnection) does not find it active.
        """
        if self._copy is not None:
            self._copy.close()
        self._copy = None
        watch = None
        if self._pgconn.status == pq.ConnStatus.OK and release_wait > 0:
            # A descriptor of our own keeps the connection open after libpq closes its one.
            watch = socket.socket(fileno=os.dup(self._pgconn.socket))
        self._pgconn.finish()
        if watch is not None:
            with watch:
                _wait_closed(watch, release_wait)


def _wait_closed(sock: socket.socket, timeout: float) -> None:
    """Read and drop what comes until the peer closes ``sock``, an error, or ``timeout`` seconds."""
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return
        try:
            if not sock.recv(65536):
                return
        except BlockingIOError:
            continue
        except OSError:
            return


def start_stream(s: Settings, *, start_lsn: str, reconnecting: bool) -> tuple[ReplicationConnection, str, bool]:
    """A connection streaming ``s.slot`` from ``start_lsn`` ("0/0": the slot's confirmed position), the
    pgoutput protocol version it speaks, and whether rows come in binary (``s.binary``).

    PreflightError when the slot cannot be used; ReplicationError when trying again may help (``reconnecting``:
    our own previous walsender may still hold the slot).
    """
    with connect(s.pg_dsn) as conn:
        info = preflight.slot_info(conn, s.slot)
        if info is None:
            raise PreflightError(
                f"replication slot {s.slot} disappeared (dropped while cdc ran): run `cdc run --create-slot` "
                "to recreate it; it first copies the rows still in the outbox, so nothing committed is missed"
            )
        if info.active_pid is not None and reconnecting:
            # Our previous walsender may linger until the server notices it is gone.
            raise ReplicationError(f"slot {s.slot} is still held by process {info.active_pid}")
        preflight.check_slot(conn, info)
        binary = _binary(conn, s)
    repl = ReplicationConnection.connect(s.pg_dsn)
    options = {"proto_version": str(preflight.protocol_version(repl.server_version)),
               "publication_names": f'"{s.publication}"'}
    if s.streaming:
        if repl.server_version < 140000:
            repl.close()
            raise PreflightError("streaming needs PostgreSQL 14 or newer: drop --streaming")
        options["streaming"] = "on"
    if binary:
        options["binary"] = "true"
    if s.heartbeat_interval > 0 and repl.server_version >= MESSAGES_SINCE:
        options["messages"] = "true"  # the heartbeats: logical decoding messages
    try:
        repl.start_replication(s.slot, start_lsn, options)
    except ReplicationError as exc:
        repl.close()
        if exc.sqlstate == "55006":
            if reconnecting:
                raise ReplicationError(str(exc)) from None  # retried: see above
            raise SlotBusy(
                f"replication slot {s.slot} is in use by another process: stop it, or use another --slot"
            ) from None
        raise
    return repl, options["proto_version"], binary


def _binary(conn: psycopg.Connection[tuple[object, ...]], s: Settings) -> bool:
    """Whether to ask for binary rows: ``s.binary``, where the server and the outbox's column types allow."""
    if s.binary == "off":
        return False
    why = None
    if conn.info.server_version < 140000:
        why = "binary pgoutput needs PostgreSQL 14 or newer"
    else:
        rows = conn.execute(
            "SELECT attname::text, atttypid::int FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, "
            "%s::text)::regclass AND attnum > 0 AND NOT attisdropped", (s.outbox_schema, s.outbox_table),
        ).fetchall()
        why = binary_readable({str(name): int(oid) for name, oid in rows})  # type: ignore[call-overload]
    if why is not None and s.binary == "on":
        raise PreflightError(f"{why}: run with --binary auto or off")
    return why is None

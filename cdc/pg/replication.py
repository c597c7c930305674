"""A logical replication connection over psycopg's low-level libpq wrapper, and how a stream starts.

This is the only module that does replication I/O. ``read`` returns every
CopyData message already available (many per wake-up), and waits on the
socket only when there is none. ``start_stream`` checks the slot and starts
streaming it with the options cdc uses.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..core.outbox_binary import binary_readable
from ..errors import PreflightError, SlotBusy
from ..pgoutput.framing import standby_status_update
from ..redact import dsn_password, scrub
from ..settings import Settings
from . import preflight
from .connect import connect, startup_options
from .monitor import MESSAGES_SINCE


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
    if result is not None and result.error_message:
        text = result.error_message.decode("utf-8", "replace")
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        state = sqlstate.decode() if sqlstate else None
    else:
        text, state = pgconn.get_error_message(), None
    return scrub(" ".join(text.split()), secret), state


class ReplicationConnection:
    def __init__(self, pgconn: pq.abc.PGconn, *, secret: str | None) -> None:
        self._pgconn = pgconn
        self._secret = secret
        self.server_version: Final = pgconn.server_version
        self.backend_pid: Final = pgconn.backend_pid
        self.arrived_at = 0.0  # time.monotonic() when the last read's data had arrived (at the latest)

    @classmethod
    def connect(cls, dsn: str, *, application_name: str = "cdc") -> ReplicationConnection:
        secret = dsn_password(dsn)
        pgconn = pq.PGconn.connect(replication_conninfo(dsn, application_name=application_name).encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = scrub(" ".join(pgconn.get_error_message().split()), secret)
            pgconn.finish()
            raise ReplicationError(f"cannot open a replication connection: {message}")
        return cls(pgconn, secret=secret)

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

    def start_replication(self, slot: str, start_lsn: str, options: dict[str, str]) -> None:
        """Enter COPY BOTH mode. ``slot`` must already be a validated identifier."""
        opts = ", ".join(f"\"{k}\" '{v}'" for k, v in options.items())
        result = self._pgconn.exec_(f'START_REPLICATION SLOT "{slot}" LOGICAL {start_lsn} ({opts})'.encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            message, state = _error_text(self._pgconn, result, self._secret)
            raise ReplicationError(message, sqlstate=state)
        self._pgconn.nonblocking = 1

    @contextmanager
    def _io(self) -> Iterator[None]:
        # libpq reports a dropped connection as an OperationalError: make it a stream end.
        try:
            yield
        except psycopg.Error as exc:
            raise StreamEnded(f"lost the replication connection: {scrub(' '.join(str(exc).split()), self._secret)}") from None

    def read(
        self, max_messages: int, timeout: float, max_bytes: int = 1 << 62, *, settle: float = 0.0
    ) -> list[memoryview]:
        """Every available CopyData payload, up to ``max_messages`` or just past ``max_bytes``.

        Waits at most ``timeout`` for the first. Once something arrives after a
        wait, waits ``settle`` seconds more before reading it, but never past
        ``timeout``: live traffic's small transactions then come several to a
        wake-up instead of one each, and a batch due at ``timeout`` is not
        held back (a drain never waits, so it never settles). ``arrived_at``
        then says when the data came, before the settle.
        """
        with self._io():
            return self._read(max_messages, timeout, max_bytes, settle)

    def _read(self, max_messages: int, timeout: float, max_bytes: int, settle: float = 0.0) -> list[memoryview]:
        pgconn = self._pgconn
        out: list[memoryview] = []
        waited = refilled = False
        size = 0
        self.arrived_at = now = time.monotonic()
        deadline = now + timeout
        while len(out) < max_messages and size < max_bytes:
            nbytes, data = pgconn.get_copy_data(1)
            if nbytes > 0:
                out.append(data)
                size += nbytes
                refilled = False
                continue
            if nbytes == 0:
                if out:
                    if refilled:
                        break
                    # libpq reads the socket ~16 KB at a time: ask it for what else
                    # has arrived (no wait), so that one wake-up handles a backlog's
                    # thousands of messages rather than forty.
                    pgconn.consume_input()
                    refilled = True
                    continue
                if waited:
                    break
                waited = True
                if select.select([pgconn.socket], [], [], timeout)[0]:
                    self.arrived_at = time.monotonic()
                    if settle > 0:
                        time.sleep(max(0.0, min(settle, deadline - time.monotonic())))
                    pgconn.consume_input()
                continue
            self._raise_end(nbytes)
        return out

    def _raise_end(self, nbytes: int) -> None:
        result = self._pgconn.get_result()
        message, state = _error_text(self._pgconn, result, self._secret)
        if nbytes == -1 and (result is None or result.status == pq.ExecStatus.COMMAND_OK):
            raise StreamEnded("the server ended the replication stream", sqlstate=state)
        raise StreamEnded(f"the replication stream broke: {message}", sqlstate=state)

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        self._send(standby_status_update(flushed, reply=reply))

    def _send(self, data: bytes) -> None:
        with self._io():
            self._send_copy_data(data)

    def _send_copy_data(self, data: bytes) -> None:
        pgconn = self._pgconn
        while pgconn.put_copy_data(data) == 0:
            select.select([], [pgconn.socket], [], 1.0)
        while pgconn.flush() == 1:
            select.select([pgconn.socket], [pgconn.socket], [], 1.0)
            pgconn.consume_input()

    def close(self) -> None:
        self._pgconn.finish()


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

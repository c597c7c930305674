"""What the monitor thread asks PostgreSQL: the slot's lag, and a heartbeat message written into the WAL."""

from __future__ import annotations

from typing import Final

from .connect import Conn

# pgoutput decodes logical decoding messages (its `messages` option) from PostgreSQL 14 on.
MESSAGES_SINCE: Final = 140000

_LAG_SQL: Final = (
    "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = %s"
)
_EMIT_SQL: Final = "SELECT pg_logical_emit_message(true, %s, %s::text)"
# Every overload is meant: PostgreSQL 17 added one with a `flush` argument.
GRANT_HINT: Final = (
    "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {role} "
    "(on PostgreSQL 17+: pg_logical_emit_message(boolean, text, text, boolean)); see docs/least-privilege.sql"
)


def slot_lag_bytes(conn: Conn, slot: str) -> int | None:
    """The server's current WAL position minus the slot's confirmed position (None: no such slot)."""
    row = conn.execute(_LAG_SQL, (slot,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def emit_message(conn: Conn, prefix: str, content: str) -> None:
    """A transactional logical decoding message: it reaches every slot inside a transaction of its own."""
    conn.execute(_EMIT_SQL, (prefix, content))

"""What the monitor thread asks PostgreSQL: the slot's lag, and a heartbeat message written into the WAL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .connect import Conn

# pgoutput decodes logical decoding messages (its `messages` option) from PostgreSQL 14 on.
MESSAGES_SINCE: Final = 140000

# pg_replication_slots.safe_wal_size: from PostgreSQL 13 on.
SAFE_WAL_SINCE: Final = 130000
_LAG_SQL: Final = (
    "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, {safe} FROM pg_replication_slots "
    "WHERE slot_name = %s"
)
_EMIT_SQL: Final = "SELECT pg_logical_emit_message(true, %s, %s::text)"
# Every overload is meant: PostgreSQL 17 added one with a `flush` argument.
GRANT_HINT: Final = (
    "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {role} "
    "(on PostgreSQL 17+: pg_logical_emit_message(boolean, text, text, boolean)); see docs/least-privilege.sql"
)


@dataclass(frozen=True, slots=True)
class SlotLag:
    lag_bytes: int | None   # the server's current WAL position minus the slot's confirmed position
    # WAL the server may still write before max_slot_wal_keep_size invalidates the slot; None: no such
    # limit (the default), or a server older than 13.
    safe_wal_bytes: int | None


def slot_lag(conn: Conn, slot: str) -> SlotLag | None:
    """The slot's lag and how much WAL it may still hold (None: no such slot)."""
    safe = "safe_wal_size" if conn.info.server_version >= SAFE_WAL_SINCE else "NULL::bigint"
    row = conn.execute(_LAG_SQL.format(safe=safe), (slot,)).fetchone()
    if row is None:
        return None
    lag, safe_wal = row
    return SlotLag(None if lag is None else int(lag), None if safe_wal is None else int(safe_wal))


def emit_message(conn: Conn, prefix: str, content: str) -> None:
    """A transactional logical decoding message: it reaches every slot inside a transaction of its own."""
    conn.execute(_EMIT_SQL, (prefix, content))

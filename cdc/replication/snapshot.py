"""A new slot and the rows that were already in the outbox when it was made.

CREATE_REPLICATION_SLOT exports a snapshot taken exactly at the slot's
consistent point: rows visible in it are delivered by reading the table, every
later commit comes from the slot. No gap, no overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..lsn import parse_lsn
from ..outbox import REQUIRED_COLUMNS
from .connection import ReplicationConnection
from .preflight import PreflightError


FAILOVER_SINCE = 170000


def want_failover(server_version: int, requested: bool | None) -> bool:
    """Failover slots unless told otherwise, where the server has them (17+).

    Asked for explicitly on an older server: refused, since the operator
    expects the slot to survive a promotion and it would not.
    """
    if requested is None:
        return server_version >= FAILOVER_SINCE
    if requested and server_version < FAILOVER_SINCE:
        major = server_version // 10000
        raise PreflightError(
            f"failover slots need PostgreSQL 17 or newer, this server is {major}: drop --failover "
            "(and after a promotion follow docs/ha.md: `cdc run --create-slot`, then `cdc verify --repair`)"
        )
    return requested


@dataclass(frozen=True, slots=True)
class NewSlot:
    name: str
    consistent_point: int
    snapshot_name: str | None


def create_slot(repl: ReplicationConnection, slot: str, *, export_snapshot: bool, failover: bool = False) -> NewSlot:
    """Create a pgoutput slot; keep ``repl`` open and idle while the snapshot is in use.

    ``failover`` (PostgreSQL 17+, checked by the caller) lets standbys with
    sync_replication_slots keep a copy that survives their promotion.
    """
    if repl.server_version >= 150000:
        snapshot = "export" if export_snapshot else "nothing"
        options = f"SNAPSHOT '{snapshot}'" + (", FAILOVER true" if failover else "")
        command = f"CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput ({options})"
    else:
        if failover:
            raise ValueError("failover slots need PostgreSQL 17 or newer")
        command = f"CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput {'EXPORT' if export_snapshot else 'NOEXPORT'}_SNAPSHOT"
    (name, consistent_point, snapshot_name, _plugin), = repl.command(command)
    assert name is not None and consistent_point is not None
    return NewSlot(name, parse_lsn(consistent_point), snapshot_name)


def outbox_rows(
    conn: psycopg.Connection[tuple[object, ...]], snapshot_name: str, schema: str, table: str
) -> Iterator[tuple[bytes | None, ...]]:
    """The outbox rows visible in the exported snapshot, in id order, as text bytes like pgoutput sends.

    Columns come in REQUIRED_COLUMNS order. ``conn`` must not be in a transaction.
    """
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET DateStyle = 'ISO, YMD'")
    conn.autocommit = False
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        query = sql.SQL("COPY (SELECT {} FROM {}.{} ORDER BY id) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in REQUIRED_COLUMNS),
            sql.Identifier(schema), sql.Identifier(table),
        )
        with conn.cursor().copy(query) as copy:
            for row in copy.rows():
                yield tuple(None if v is None else str(v).encode() for v in row)
        conn.rollback()
    finally:
        conn.autocommit = True

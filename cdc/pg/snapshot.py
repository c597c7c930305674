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

from ..core.outbox import REQUIRED_COLUMNS
from ..lsn import parse_lsn
from .replication import ReplicationConnection


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

    Columns come in REQUIRED_COLUMNS order. ``conn`` must come from cdc.pg.connect (whose session settings
    print timestamps as pgoutput does) and must not be in a transaction.
    """
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

"""``cdc migrate``'s work: apply migrations/ in order, once each; create the publication and the slot.

Migrations are SQL templates: ``{table}`` and friends are replaced by quoted,
validated identifiers (cdc/outbox_ddl.py, shared with the Django migration).
Each runs in its own transaction under an advisory lock, so two concurrent
``cdc migrate`` (or a Django ``migrate``) never apply one twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..settings import Settings
from . import outbox_ddl, preflight
from .connect import connect
from .replication import ReplicationConnection
from .slots import drop_inactive_slot, want_failover
from .shard_setup import ShardSetup, setup as setup_shards
from .shards import read_sharding
from .snapshot import create_slot


@dataclass
class MigrateReport:
    applied: list[str] = field(default_factory=list)
    publication_created: bool = False
    slot_created: bool = False
    slot_skipped_reason: str | None = None
    shards: ShardSetup | None = None
    slot_failover: bool = False


def apply_migrations(conn: psycopg.Connection[tuple[object, ...]], s: Settings) -> list[str]:
    # Each migration in its own transaction, so a failure keeps what went before.
    with conn.transaction(), conn.cursor() as cur:
        outbox_ddl.lock(cur)  # two first runs at once would race on CREATE ... IF NOT EXISTS
        outbox_ddl.ensure_ledger(cur, s.outbox_schema)
    applied: list[str] = []
    for name, template in outbox_ddl.migration_files():
        with conn.transaction(), conn.cursor() as cur:
            outbox_ddl.lock(cur)
            if outbox_ddl.apply_one(cur, s.outbox_schema, s.outbox_table, name, template):
                applied.append(name)
    return applied


def ensure_publication(conn: psycopg.Connection[tuple[object, ...]], s: Settings) -> bool:
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (s.publication,)).fetchone():
        return False
    conn.execute(sql.SQL(
        "CREATE PUBLICATION {} FOR TABLE {}.{} WITH (publish = 'insert', publish_via_partition_root = true)"
    ).format(sql.Identifier(s.publication), sql.Identifier(s.outbox_schema), sql.Identifier(s.outbox_table)))
    return True


def ensure_slot(
    conn: psycopg.Connection[tuple[object, ...]], s: Settings, failover: bool = False
) -> tuple[bool, str | None]:
    """Create the slot now, so events written before the first ``cdc run`` are kept for it.

    If the outbox already holds rows in the slot's snapshot, the slot is dropped
    again: ``cdc run --create-slot`` must create it, to deliver those rows first.
    """
    if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (s.slot,)).fetchone():
        return False, None
    repl = ReplicationConnection.connect(s.pg_dsn, application_name="cdc-migrate")
    try:
        new = create_slot(repl, s.slot, export_snapshot=True, failover=failover)
        with connect(s.pg_dsn) as check:
            check.autocommit = False
            check.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            check.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(new.snapshot_name)))
            has_rows = check.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{})").format(
                    sql.Identifier(s.outbox_schema), sql.Identifier(s.outbox_table))
            ).fetchone()[0]  # type: ignore[index]
    finally:
        repl.close()
    if has_rows:
        drop_inactive_slot(conn, s.slot)
        return False, "the outbox already holds rows: `cdc run --create-slot` creates the slot and delivers them first"
    return True, None


def migrate(s: Settings, shards: int | None = None) -> MigrateReport:
    """``shards``: None keeps the layout there is (one shard when new); 1 is today's layout."""
    report = MigrateReport()
    with connect(s.pg_dsn) as conn:
        preflight.check_server(conn)
        # Refuse an impossible --failover before changing anything.
        wanted = want_failover(conn.info.server_version, s.failover)
        report.applied = apply_migrations(conn, s)
        sharding = read_sharding(conn, s.outbox_schema, s.slot)
        if sharding is not None or (shards is not None and shards > 1):
            # Sharded stays sharded (a new count goes through `cdc shards reshard`, which setup says).
            count = shards if shards is not None else sharding.current.shards  # type: ignore[union-attr]
            report.shards = setup_shards(conn, s, count)
            return report
        report.publication_created = ensure_publication(conn, s)
        report.slot_created, report.slot_skipped_reason = ensure_slot(conn, s, wanted)
        report.slot_failover = wanted
    return report

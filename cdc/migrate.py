"""``cdc migrate``'s work: apply migrations/ in order, once each; create the publication and the slot.

Migrations are SQL templates: ``{table}`` and friends are replaced by quoted,
validated identifiers. Each runs in its own transaction under an advisory lock,
so two concurrent ``cdc migrate`` never apply one twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from .names import quote_ident
from .replication import preflight
from .replication.connection import ReplicationConnection
from .replication.snapshot import create_slot
from .settings import Settings
from .shards import catalog
from .shards.setup import ShardSetup, setup as setup_shards

_LOCK_KEY = 0x6364635F6D6967  # "cdc_mig"


@dataclass
class MigrateReport:
    applied: list[str] = field(default_factory=list)
    publication_created: bool = False
    slot_created: bool = False
    slot_skipped_reason: str | None = None
    shards: ShardSetup | None = None


def migration_files() -> list[tuple[str, str]]:
    files = resources.files("cdc._migrations")
    return sorted((f.name, f.read_text()) for f in files.iterdir() if f.name.endswith(".sql"))


def _template_values(s: Settings) -> dict[str, str]:
    schema = quote_ident(s.outbox_schema)
    return {
        "schema": schema,
        "table": f"{schema}.{quote_ident(s.outbox_table)}",
        "default_partition": f"{schema}.{quote_ident(s.outbox_table + '_default')}",
    }


def apply_migrations(conn: psycopg.Connection[tuple[object, ...]], s: Settings) -> list[str]:
    values = _template_values(s)
    ledger = sql.Identifier(s.outbox_schema, "cdc_migrations")
    applied: list[str] = []
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s.outbox_schema)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (table_name text NOT NULL, migration text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, migration))"
        ).format(ledger))
    for name, template in migration_files():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            done = conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE table_name = %s AND migration = %s").format(ledger),
                (s.outbox_table, name),
            ).fetchone()
            if done:
                continue
            conn.execute(template.format(**values).encode())
            conn.execute(
                sql.SQL("INSERT INTO {} (table_name, migration) VALUES (%s, %s)").format(ledger), (s.outbox_table, name)
            )
            applied.append(name)
    return applied


def ensure_publication(conn: psycopg.Connection[tuple[object, ...]], s: Settings) -> bool:
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (s.publication,)).fetchone():
        return False
    conn.execute(sql.SQL(
        "CREATE PUBLICATION {} FOR TABLE {}.{} WITH (publish = 'insert', publish_via_partition_root = true)"
    ).format(sql.Identifier(s.publication), sql.Identifier(s.outbox_schema), sql.Identifier(s.outbox_table)))
    return True


def ensure_slot(conn: psycopg.Connection[tuple[object, ...]], s: Settings) -> tuple[bool, str | None]:
    """Create the slot now, so events written before the first ``cdc run`` are kept for it.

    If the outbox already holds rows in the slot's snapshot, the slot is dropped
    again: ``cdc run --create-slot`` must create it, to deliver those rows first.
    """
    if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (s.slot,)).fetchone():
        return False, None
    repl = ReplicationConnection.connect(s.pg_dsn, application_name="cdc-migrate")
    try:
        new = create_slot(repl, s.slot, export_snapshot=True)
        with preflight.connect(s.pg_dsn) as check:
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
        conn.execute("SELECT pg_drop_replication_slot(%s)", (s.slot,))
        return False, "the outbox already holds rows: `cdc run --create-slot` creates the slot and delivers them first"
    return True, None


def migrate(s: Settings, shards: int | None = None) -> MigrateReport:
    """``shards``: None keeps the layout there is (one shard when new); 1 is today's layout."""
    report = MigrateReport()
    with preflight.connect(s.pg_dsn) as conn:
        preflight.check_server(conn)
        report.applied = apply_migrations(conn, s)
        sharding = catalog.read(conn, s.outbox_schema, s.slot)
        if sharding is not None or (shards is not None and shards > 1):
            # Sharded stays sharded (a new count goes through `cdc shards reshard`, which setup says).
            count = shards if shards is not None else sharding.current.shards  # type: ignore[union-attr]
            report.shards = setup_shards(conn, s, count)
            return report
        report.publication_created = ensure_publication(conn, s)
        report.slot_created, report.slot_skipped_reason = ensure_slot(conn, s)
    return report

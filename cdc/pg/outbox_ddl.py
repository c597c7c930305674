"""The outbox's DDL and its ledger, for every way of creating the outbox.

``cdc migrate`` and the Django migration (cdc.contrib.django) both apply the
packaged migrations/*.sql through here, record each in the same ledger
(``<schema>.cdc_migrations``) and take the same advisory lock. So either can run
first, either can run again, and a migration is applied exactly once whichever
does it.

Everything takes a DB-API cursor (psycopg's, or Django's wrapper around it) and
plain SQL text with ``%s`` parameters, and runs in the caller's transaction.
Names are validated identifiers (cdc.names), quoted here.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final, Protocol

from ..names import identifier, quote_ident

LOCK_KEY: Final = 0x6364635F6D6967  # "cdc_mig": serialises concurrent migrators
LEDGER_TABLE: Final = "cdc_migrations"


class Cursor(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL template) of every packaged migration, in order."""
    files = resources.files("cdc._migrations")
    return sorted((f.name, f.read_text()) for f in files.iterdir() if f.name.endswith(".sql"))


def template_values(schema: str, table: str) -> dict[str, str]:
    """What the migrations' ``{placeholders}`` stand for: quoted, validated names."""
    quoted_schema = quote_ident(identifier(schema, "schema"))
    identifier(table, "table")
    return {
        "schema": quoted_schema,
        "table": f"{quoted_schema}.{quote_ident(table)}",
        "default_partition": f"{quoted_schema}.{quote_ident(table + '_default')}",
    }


def _ledger(schema: str) -> str:
    return f"{quote_ident(identifier(schema, 'schema'))}.{quote_ident(LEDGER_TABLE)}"


def lock(cursor: Cursor) -> None:
    """Hold the migrators' advisory lock until the caller's transaction ends."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))


def ensure_ledger(cursor: Cursor, schema: str) -> None:
    cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(identifier(schema, 'schema'))}")
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {_ledger(schema)} (table_name text NOT NULL, migration text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, migration))"
    )


def apply_one(cursor: Cursor, schema: str, table: str, name: str, template: str) -> bool:
    """Apply one migration unless the ledger has it; True if applied. Call with the lock held."""
    cursor.execute(f"SELECT 1 FROM {_ledger(schema)} WHERE table_name = %s AND migration = %s", (table, name))
    if cursor.fetchone():
        return False
    # No parameters: the driver sends the template as it is, several statements at once.
    cursor.execute(template.format(**template_values(schema, table)))
    cursor.execute(f"INSERT INTO {_ledger(schema)} (table_name, migration) VALUES (%s, %s)", (table, name))
    return True


def apply_pending(cursor: Cursor, schema: str, table: str) -> list[str]:
    """Apply, in the caller's transaction, every migration the ledger lacks; return their names."""
    lock(cursor)
    ensure_ledger(cursor, schema)
    return [name for name, template in migration_files() if apply_one(cursor, schema, table, name, template)]


def revert(cursor: Cursor, schema: str, table: str) -> None:
    """Drop the outbox (its partitions go with it) and forget its migrations, in the caller's transaction.

    Rows still in the outbox are gone with it, delivered or not.
    """
    lock(cursor)
    ensure_ledger(cursor, schema)
    cursor.execute(f"DROP TABLE IF EXISTS {template_values(schema, table)['table']}")
    cursor.execute(f"DELETE FROM {_ledger(schema)} WHERE table_name = %s", (table,))

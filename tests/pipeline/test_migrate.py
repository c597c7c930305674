"""``cdc migrate`` is idempotent on the PostgreSQL side: a second run changes nothing in the catalogs."""

from __future__ import annotations

import pytest
from support import Target, checked

# Everything `cdc migrate` creates or could touch, read from the catalogs.
_CATALOG = {
    "schemas": "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relreplident, c.relispartition,
               pg_get_expr(c.relpartbound, c.oid), pg_get_partkeydef(c.oid), c.relowner::regrole::text, c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND a.attnum > 0
          AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace::regnamespace::text NOT LIKE 'pg\\_%'
          AND connamespace::regnamespace::text <> 'information_schema'""",
    "indexes": """
        SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'""",
    "inheritance": "SELECT inhrelid::regclass::text, inhparent::regclass::text, inhseqno FROM pg_inherits",
    "sequences": "SELECT schemaname, sequencename, data_type::text, last_value FROM pg_sequences",
    "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal",
    "publications": """
        SELECT pubname, pubowner::regrole::text, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot
        FROM pg_publication""",
    "published tables": "SELECT pubname, schemaname, tablename FROM pg_publication_tables",
    "slots": """
        SELECT slot_name, plugin, slot_type, temporary, two_phase, restart_lsn::text, confirmed_flush_lsn::text,
               catalog_xmin::text
        FROM pg_replication_slots WHERE database = current_database()""",
    "migration ledger": "SELECT table_name, migration, applied_at FROM cdc_migrations",
}


def _catalog(t: Target) -> dict[str, list[tuple[object, ...]]]:
    with t.pg() as conn:
        ledger = conn.execute("SELECT to_regclass('cdc_migrations') IS NOT NULL").fetchone() == (True,)
        return {
            name: sorted(conn.execute(query).fetchall(), key=repr) if ledger or "cdc_migrations" not in query else []
            for name, query in _CATALOG.items()
        }


@pytest.mark.single_slot("expects the one slot in the catalogs")
def test_migrate_twice_leaves_the_postgresql_catalogs_as_the_first_run_made_them(
    pg_dsn: str, clickhouse_url: str
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    before = _catalog(t)
    checked(t.cdc("migrate"))
    first = _catalog(t)
    assert first != before, "the first migrate created nothing"
    assert {row[1] for row in first["relations"]} >= {"outbox", "outbox_default", "cdc_migrations"}
    assert [row[0] for row in first["slots"]] == ["cdc_outbox"]
    assert [row[0] for row in first["publications"]] == ["cdc_outbox"]

    checked(t.cdc("migrate"))
    second = _catalog(t)
    changed = {name: (first[name], second[name]) for name in _CATALOG if first[name] != second[name]}
    assert not changed, f"the second migrate changed the catalogs: {changed}"

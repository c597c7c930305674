"""The publication ``cdc run`` reads through: create it for the outbox, show what it covers, add a table, drop it.

With a partitioned outbox the publication must send rows as the outbox itself
(``publish_via_partition_root = true``): otherwise they arrive named after the
partition they were written to, and the pipeline does not recognise them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ..errors import AdminError
from .connect import Conn, refusals, server_version, version_text

COVERS = "yes"
PARTITIONS_ONLY = "partitions only"
NOT_COVERED = "no"


@dataclass(frozen=True, slots=True)
class PublishedTable:
    schema: str
    table: str
    row_filter: str | None   # 15+
    columns: list[str] | None  # 15+: a column list; None means every column


@dataclass(slots=True)
class Publication:
    name: str
    owner: str
    all_tables: bool
    publish: list[str]
    via_partition_root: bool | None  # 13+
    tables: list[PublishedTable] = field(default_factory=list)
    outbox: str = ""
    covers_outbox: str = NOT_COVERED

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "owner": self.owner, "all_tables": self.all_tables, "publish": self.publish,
            "publish_via_partition_root": self.via_partition_root,
            "tables": [
                {"schema": t.schema, "table": t.table, "row_filter": t.row_filter, "columns": t.columns}
                for t in self.tables
            ],
            "outbox": self.outbox, "covers_outbox": self.covers_outbox,
        }


def get_publication(conn: Conn, name: str, schema: str, table: str) -> Publication | None:
    v = server_version(conn)
    row = conn.execute(
        sql.SQL(
            "SELECT p.pubname::text, pg_get_userbyid(p.pubowner)::text, p.puballtables, "
            "p.pubinsert, p.pubupdate, p.pubdelete, {truncate}, {viaroot} "
            "FROM pg_publication p WHERE p.pubname = %s"
        ).format(
            truncate=sql.SQL("p.pubtruncate" if v >= 110000 else "false"),
            viaroot=sql.SQL("p.pubviaroot" if v >= 130000 else "NULL::boolean"),
        ),
        (name,),
    ).fetchone()
    if row is None:
        return None
    pubname, owner, all_tables, ins, upd, dele, trunc, viaroot = row
    publish = [op for op, on in (("insert", ins), ("update", upd), ("delete", dele), ("truncate", trunc)) if on]
    pub = Publication(str(pubname), str(owner), bool(all_tables), publish, viaroot,
                      outbox=f"{schema}.{table}")
    extra = "rowfilter, attnames::text[]" if v >= 150000 else "NULL::text, NULL::text[]"
    for t_schema, t_name, row_filter, columns in conn.execute(
        sql.SQL("SELECT schemaname::text, tablename::text, {} FROM pg_publication_tables "
                "WHERE pubname = %s ORDER BY 1, 2").format(sql.SQL(extra)),
        (name,),
    ).fetchall():
        pub.tables.append(PublishedTable(str(t_schema), str(t_name), row_filter, columns))
    pub.covers_outbox = coverage(conn, pub, schema, table)
    return pub


def coverage(conn: Conn, pub: Publication, schema: str, table: str) -> str:
    """COVERS when rows of the outbox arrive as the outbox, PARTITIONS_ONLY when under partition names."""
    if any(t.schema == schema and t.table == table for t in pub.tables):
        return COVERS
    partitions = {
        (str(s), str(t)) for s, t in conn.execute(
            "SELECT n.nspname::text, c.relname::text "
            "FROM pg_partition_tree(to_regclass(format('%%I.%%I', %s::text, %s::text))) p "
            "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.level > 0",
            (schema, table),
        ).fetchall()
    } if server_version(conn) >= 120000 else set()
    if any((t.schema, t.table) in partitions for t in pub.tables):
        return PARTITIONS_ONLY
    return NOT_COVERED


def fix_for(pub_name: str, state: str, schema: str, table: str) -> str:
    if state == PARTITIONS_ONLY:
        return f"ALTER PUBLICATION {pub_name} SET (publish_via_partition_root = true);"
    return f"ALTER PUBLICATION {pub_name} ADD TABLE {schema}.{table};"


def table_exists(conn: Conn, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (schema, table)).fetchone()
    return bool(row and row[0])


def create_publication(conn: Conn, name: str, schema: str, table: str) -> bool:
    """Create the outbox's publication; False when it already exists and covers the outbox."""
    existing = get_publication(conn, name, schema, table)
    if existing is not None:
        if existing.covers_outbox == COVERS and "insert" in existing.publish:
            return False
        problem = (
            "does not publish inserts" if "insert" not in existing.publish
            else f"does not cover {schema}.{table}" if existing.covers_outbox == NOT_COVERED
            else f"sends {schema}.{table}'s rows under its partitions' names"
        )
        fix = (
            f"ALTER PUBLICATION {name} SET (publish = 'insert');" if "insert" not in existing.publish
            else fix_for(name, existing.covers_outbox, schema, table)
        )
        raise AdminError(f"publication {name} already exists but {problem}: {fix}")
    v = server_version(conn)
    if v < 130000:
        raise AdminError(
            f"publishing a partitioned outbox needs PostgreSQL 13 or newer, this server is {version_text(v)}"
        )
    if not table_exists(conn, schema, table):
        raise AdminError(f"table {schema}.{table} does not exist: run `cdc migrate` first")
    with refusals(f"create publication {name} (the outbox's owner or a superuser must)"):
        conn.execute(sql.SQL(
            "CREATE PUBLICATION {} FOR TABLE {}.{} WITH (publish = 'insert', publish_via_partition_root = true)"
        ).format(sql.Identifier(name), sql.Identifier(schema), sql.Identifier(table)))
    return True


def add_table(conn: Conn, name: str, schema: str, table: str, outbox: tuple[str, str]) -> bool:
    """ALTER PUBLICATION ... ADD TABLE; False when the table is already in it."""
    pub = get_publication(conn, name, *outbox)
    if pub is None:
        raise AdminError(f"publication {name} does not exist: create it with `cdc publication create`")
    if pub.all_tables:
        raise AdminError(f"publication {name} is FOR ALL TABLES: it already has every table")
    if not table_exists(conn, schema, table):
        raise AdminError(f"table {schema}.{table} does not exist: check the name (case matters)")
    if any(t.schema == schema and t.table == table for t in pub.tables):
        return False
    with refusals(f"add {schema}.{table} to publication {name}"):
        conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}.{}").format(
            sql.Identifier(name), sql.Identifier(schema), sql.Identifier(table)))
    return True


def drop_publication(conn: Conn, name: str) -> None:
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone() is None:
        raise AdminError(f"publication {name} does not exist: nothing to drop")
    with refusals(f"drop publication {name}"):
        conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))

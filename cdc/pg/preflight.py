"""Checks that must pass before we stream, each failing with one line that says what to do.

These run over an ordinary SQL connection. Nothing here acknowledges anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..core.outbox import REQUIRED_COLUMNS
from ..errors import ConnectError, PreflightError, SlotBusy
from ..lsn import format_lsn, parse_lsn
from ..settings import Settings

# A WAL page's header (XLogPageHeaderData, MAXALIGNed), and the longer one of a segment's first page.
_SHORT_PAGE_HEADER = 24
_LONG_PAGE_HEADER = 40

__all__ = ["ConnectError", "PreflightError", "SlotInfo"]  # and the checks below


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    plugin: str | None
    database: str | None
    active_pid: int | None
    confirmed_flush_lsn: int | None
    wal_status: str | None


def check_for_run(
    conn: psycopg.Connection[tuple[object, ...]], s: Settings, *, create_slot: bool, from_lsn: int | None
) -> SlotInfo | None:
    """Everything ``cdc run`` needs of the server; the slot as it is, or None when it is to be created."""
    check_server(conn)
    check_outbox(conn, s.outbox_schema, s.outbox_table)
    check_publication(conn, s.publication, s.outbox_schema, s.outbox_table)
    info = slot_info(conn, s.slot)
    if info is not None:
        check_slot(conn, info)
        if from_lsn is not None:
            check_replayable(info, from_lsn)
    elif from_lsn is not None:
        raise PreflightError(f"replication slot {s.slot} does not exist: there is nothing to replay")
    elif not create_slot:
        raise PreflightError(
            f"replication slot {s.slot} does not exist: run `cdc migrate`, or `cdc run --create-slot`"
        )
    return info


def check_replayable(info: SlotInfo, from_lsn: int) -> None:
    oldest = info.confirmed_flush_lsn or 0
    if from_lsn < oldest:
        raise PreflightError(
            f"cannot replay from {format_lsn(from_lsn)}: slot {info.name} can give nothing older than "
            f"{format_lsn(oldest)} (its confirmed position); replay from there, use `cdc backfill --since` "
            "for older events, and keep a replay window next time with `cdc run --retain`"
        )


def check_server(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    wal_level = conn.execute("SHOW wal_level").fetchone()[0]  # type: ignore[index]
    if wal_level != "logical":
        raise PreflightError(
            f"wal_level is {wal_level!r}, logical replication needs 'logical': "
            "run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"
        )
    encoding = conn.execute("SHOW server_encoding").fetchone()[0]  # type: ignore[index]
    if encoding != "UTF8":
        raise PreflightError(f"server_encoding is {encoding}: cdc needs a UTF8 database")
    row = conn.execute(
        "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is None or not row[1]:
        user = row[0] if row else "current_user"
        raise PreflightError(
            f"role {user} lacks the REPLICATION attribute: run ALTER ROLE {user} REPLICATION; as a superuser"
        )


def check_outbox(conn: psycopg.Connection[tuple[object, ...]], schema: str, table: str) -> None:
    rows = conn.execute(
        """SELECT a.attname FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (schema, table),
    ).fetchall()
    if not rows:
        raise PreflightError(f"outbox table {schema}.{table} does not exist: run `cdc migrate`")
    present = {r[0] for r in rows}
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise PreflightError(
            f"outbox table {schema}.{table} lacks column(s) {', '.join(missing)}: "
            "run `cdc migrate` or add them (see README, the outbox contract)"
        )


def check_publication(conn: psycopg.Connection[tuple[object, ...]], publication: str, schema: str, table: str) -> None:
    row = conn.execute("SELECT pubinsert, pubviaroot FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    if row is None:
        raise PreflightError(
            f"publication {publication} does not exist: run `cdc migrate`, or as the table owner: "
            f"CREATE PUBLICATION {publication} FOR TABLE {schema}.{table} WITH (publish = 'insert');"
        )
    if not row[0]:
        raise PreflightError(
            f"publication {publication} does not publish inserts: ALTER PUBLICATION {publication} SET (publish = 'insert');"
        )
    # pg_publication_tables lists the root of a partitioned outbox, or its
    # partitions, depending on publish_via_partition_root: accept either.
    covered = conn.execute(
        """SELECT 1 FROM pg_publication_tables pt
           WHERE pt.pubname = %s AND (
             (pt.schemaname = %s AND pt.tablename = %s)
             OR format('%%I.%%I', pt.schemaname, pt.tablename)::regclass IN (
                 SELECT inhrelid::regclass FROM pg_inherits
                 WHERE inhparent = format('%%I.%%I', %s::text, %s::text)::regclass))
           LIMIT 1""",
        (publication, schema, table, schema, table),
    ).fetchone()
    if covered is None:
        raise PreflightError(
            f"publication {publication} does not cover {schema}.{table}: "
            f"ALTER PUBLICATION {publication} ADD TABLE {schema}.{table};"
        )
    partitioned = conn.execute(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    if partitioned and partitioned[0] and not row[1]:
        # Rows would arrive as the partitions', which are not the outbox: they would be lost.
        raise PreflightError(
            f"publication {publication} sends the rows of {schema}.{table} as its partitions': "
            f"ALTER PUBLICATION {publication} SET (publish_via_partition_root = true);"
        )


def slot_info(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> SlotInfo | None:
    has_wal_status = conn.info.server_version >= 130000
    query = sql.SQL(
        "SELECT slot_name::text, plugin::text, database::text, active_pid, confirmed_flush_lsn::text, {} "
        "FROM pg_replication_slots WHERE slot_name = %s"
    ).format(sql.SQL("wal_status") if has_wal_status else sql.SQL("NULL::text"))
    row = conn.execute(query, (slot,)).fetchone()
    if row is None:
        return None
    name, plugin, database, pid, confirmed, wal_status = row
    return SlotInfo(
        name=str(name), plugin=plugin, database=database,  # type: ignore[arg-type]
        active_pid=pid,  # type: ignore[arg-type]
        confirmed_flush_lsn=parse_lsn(confirmed) if confirmed else None,  # type: ignore[arg-type]
        wal_status=wal_status,  # type: ignore[arg-type]
    )


def check_slot(conn: psycopg.Connection[tuple[object, ...]], info: SlotInfo) -> None:
    database = conn.info.dbname
    if info.wal_status == "lost" or info.confirmed_flush_lsn is None:
        raise PreflightError(
            f"replication slot {info.name} has been invalidated (the WAL it needed was removed, "
            "max_slot_wal_keep_size exceeded): drop it with `cdc slot drop`, "
            "run `cdc run --create-slot` (it delivers the gap: what ClickHouse lacks)"
        )
    if info.plugin != "pgoutput":
        raise PreflightError(f"replication slot {info.name} uses plugin {info.plugin}, not pgoutput: use another --slot")
    if info.database != database:
        raise PreflightError(
            f"replication slot {info.name} belongs to database {info.database}, not {database}: use another --slot"
        )
    if info.active_pid is not None:
        raise SlotBusy(
            f"replication slot {info.name} is in use by process {info.active_pid} (another cdc run?): "
            "stop that process, or use another --slot"
        )


def current_wal_lsn(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The end of the WAL inserted so far: every transaction committed before this call ends at or before it.

    Not pg_current_wal_lsn(), which is how far the WAL has been *written*: with
    synchronous_commit off, a commit returns before its record is written, so
    that position can stay behind transactions already committed (for up to
    the WAL writer's delay). pg_current_wal_insert_lsn() is where the next
    record will start, which is past the page header when the last record
    ended on a page boundary; the boundary itself is that record's end, and the
    position a caught-up stream reports, so it is taken back to it.
    """
    row = conn.execute(
        "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int, "
        "(SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 ELSE 1048576 END "
        " FROM pg_settings WHERE name = 'wal_segment_size')"
    ).fetchone()
    lsn, block, segment = parse_lsn(str(row[0])), int(row[1]), int(row[2])  # type: ignore[index, arg-type]
    if lsn % segment == _LONG_PAGE_HEADER:
        return lsn - _LONG_PAGE_HEADER
    if lsn % block == _SHORT_PAGE_HEADER:
        return lsn - _SHORT_PAGE_HEADER
    return lsn


def protocol_version(server_version: int) -> int:
    """The newest pgoutput protocol the server speaks: 4 from 16, 3 from 15, 2 from 14."""
    if server_version >= 160000:
        return 4
    if server_version >= 150000:
        return 3
    if server_version >= 140000:
        return 2
    return 1

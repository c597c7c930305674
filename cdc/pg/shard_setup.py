"""``cdc migrate --shards N``: the shard column, N row-filtered publications and N slots, recorded as generation 1.

One shard is today's layout and is not handled here. N > 1 needs publication row
filters (PostgreSQL 15+). Each slot is created with an exported snapshot in which
the outbox must hold no row of its shard: such a row was committed before the
slot existed and would never be sent. Then everything made is dropped again and
the refusal says how to deliver those rows first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..names import NameError_
from ..settings import Settings
from ..shards import ShardError
from ..shards.layout import SHARD_COLUMN, SHARD_EXPRESSION, Shard, shards_of
from . import shards as catalog
from .connect import Conn, connect
from .replication import ReplicationConnection
from .snapshot import create_slot

ROW_FILTERS_SINCE = 150000


@dataclass
class ShardSetup:
    shards: int
    generation: int
    column_added: bool = False
    publications_created: list[str] = field(default_factory=list)
    slots_created: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"shards": self.shards, "generation": self.generation, "column_added": self.column_added,
                "publications_created": self.publications_created, "slots_created": self.slots_created}


def require_row_filters(server_version: int) -> None:
    if server_version < ROW_FILTERS_SINCE:
        major = server_version // 10000
        raise ShardError(
            f"sharding needs PostgreSQL 15 or newer (publication row filters), this server is {major}: "
            "run with one shard (--shards 1), or upgrade PostgreSQL"
        )


def has_shard_column(conn: Conn, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
        "AND attname = %s AND NOT attisdropped",
        (schema, table, SHARD_COLUMN),
    ).fetchone()
    return row is not None


def ensure_shard_column(conn: Conn, schema: str, table: str) -> bool:
    """Add the stored generated column; True when added. Rewrites the table (an ACCESS EXCLUSIVE lock)."""
    if has_shard_column(conn, schema, table):
        return False
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint GENERATED ALWAYS AS ({}) STORED").format(
        sql.Identifier(schema, table), sql.Identifier(SHARD_COLUMN), sql.SQL(SHARD_EXPRESSION)))
    return True


def publication_exists(conn: Conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone() is not None


def slot_exists(conn: Conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone() is not None


def create_publication(conn: Conn, shard: Shard, schema: str, table: str) -> bool:
    if publication_exists(conn, shard.publication):
        return False
    where = sql.SQL("") if shard.row_filter is None else sql.SQL(" WHERE {}").format(sql.SQL(shard.row_filter))
    conn.execute(sql.SQL(
        "CREATE PUBLICATION {} FOR TABLE {}{} WITH (publish = 'insert', publish_via_partition_root = true)"
    ).format(sql.Identifier(shard.publication), sql.Identifier(schema, table), where))
    return True


def create_empty_slot(dsn: str, shard: Shard, schema: str, table: str) -> tuple[int, bool]:
    """Create the shard's slot: (its consistent point, whether the outbox already held rows of its shard then)."""
    repl = ReplicationConnection.connect(dsn, application_name="cdc-shards")
    try:
        new = create_slot(repl, shard.slot, export_snapshot=True)
        assert new.snapshot_name is not None
        with connect(dsn) as check:
            check.autocommit = False
            check.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            check.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(new.snapshot_name)))
            where = sql.SQL("true") if shard.row_filter is None else sql.SQL(shard.row_filter)
            row = check.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
                sql.Identifier(schema, table), where)).fetchone()
            check.rollback()
    finally:
        repl.close()
    return new.consistent_point, bool(row and row[0])


def drop_quietly(conn: Conn, shards: list[Shard], *, wait: float = 15.0) -> None:
    """Drop the shards' slots and publications; a slot whose last walsender is still going away is waited for."""
    for shard in shards:
        deadline = time.monotonic() + wait
        while slot_exists(conn, shard.slot):
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (shard.slot,))
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise ShardError(f"replication slot {shard.slot} stays in use: stop whatever streams it, "
                                     "then run the command again") from None
                time.sleep(0.1)
        if publication_exists(conn, shard.publication):
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(shard.publication)))


def setup(conn: Conn, s: Settings, count: int) -> ShardSetup:
    """Shard the outbox ``count`` ways (``count`` > 1), or check that it already is; see the module docstring."""
    require_row_filters(conn.info.server_version)
    schema, outbox = s.outbox_schema, s.outbox_table
    existing = catalog.read_sharding(conn, schema, s.slot)
    if existing is not None and existing.current.state != catalog.CREATING:
        current = existing.current
        if current.shards != count:
            raise ShardError(
                f"the outbox is already split into {current.shards} shards (slots {s.slot}_*): "
                f"change that under load with `cdc shards reshard {count}`"
            )
        return ShardSetup(count, current.number)
    if existing is None and slot_exists(conn, s.slot):
        raise ShardError(
            f"replication slot {s.slot} already streams this outbox unsharded: split it with "
            f"`cdc shards reshard {count}` (no event is lost or repeated), not with migrate"
        )
    if existing is not None and existing.current.shards != count:
        # An interrupted migrate with another count: start over.
        drop_quietly(conn, existing.current.shard_list())
        catalog.delete_generation(conn, schema, s.slot, existing.current.number)
        existing = None
    try:
        shards = shards_of(s.slot, s.publication, 1, count)
    except NameError_ as exc:
        raise ShardError(str(exc)) from None
    report = ShardSetup(count, 1)
    report.column_added = ensure_shard_column(conn, schema, outbox)
    catalog.create_tables(conn, schema)
    if existing is None:
        catalog.insert_generation(conn, schema, slot=s.slot, generation=1, publication=s.publication,
                                  outbox=(schema, outbox), shards=count, state=catalog.CREATING)
    for shard in shards:
        if create_publication(conn, shard, schema, outbox):
            report.publications_created.append(shard.publication)
    for shard in shards:
        if slot_exists(conn, shard.slot):
            continue
        _point, has_rows = create_empty_slot(s.pg_dsn, shard, schema, outbox)
        report.slots_created.append(shard.slot)
        if has_rows:
            drop_quietly(conn, shards)
            catalog.delete_generation(conn, schema, s.slot, 1)
            raise ShardError(
                f"the outbox already holds rows that new slots would never send: deliver them first with one "
                f"shard (`cdc migrate --shards 1`, `cdc run --create-slot --until-lsn current`), then split it "
                f"with `cdc shards reshard {count}`"
            )
    catalog.set_state(conn, schema, s.slot, 1, catalog.ACTIVE)
    return report

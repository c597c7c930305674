"""Where a sharded outbox is described in PostgreSQL: its generations, and the workers that stream them.

Two small tables in the outbox's schema, made by ``cdc migrate --shards N`` (an
outbox never sharded has neither, and ``cdc run`` then works exactly as before):

- ``cdc_shard_generations``: one row per generation of a slot family (``--slot``):
  how many shards, its state, and ``starts_at``, the LSN from which its slots
  deliver (rows committed before it belong to the previous generation);
- ``cdc_workers``: one row per running worker, its heartbeat and the backend pid
  of its lock connection (see cdc/workers/).

Generation 0 is today's unsharded layout: it has a row only while a reshard
drains it. States of a generation: ``creating`` (its slots are being made), ``active`` (workers
stream it), ``paused`` (a reshard asked its workers to let go), ``draining`` (a
newer generation took over at its successor's ``starts_at``; the reshard delivers
what is left below it). A generation is deleted once drained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from psycopg import errors, sql

from ..lsn import format_lsn, parse_lsn
from ..shards import ShardError
from ..shards.layout import Shard, shards_of, split_key, unsharded
from .connect import Conn

GENERATIONS: Final = "cdc_shard_generations"
WORKERS: Final = "cdc_workers"
CREATING, ACTIVE, PAUSED, DRAINING = "creating", "active", "paused", "draining"
STATES: Final = (CREATING, ACTIVE, PAUSED, DRAINING)

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS {generations} (
    slot          text        NOT NULL,
    generation    integer     NOT NULL CHECK (generation >= 0),
    publication   text        NOT NULL,
    outbox_schema text        NOT NULL,
    outbox_table  text        NOT NULL,
    shards        integer     NOT NULL CHECK (shards BETWEEN 1 AND 64),
    state         text        NOT NULL CHECK (state IN ('creating', 'active', 'paused', 'draining')),
    starts_at     pg_lsn,
    paused_by     integer,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, generation))""",
    """CREATE TABLE IF NOT EXISTS {workers} (
    worker_id    text        PRIMARY KEY,
    slot         text        NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    backend_pid  integer     NOT NULL,
    member_key   bigint      NOT NULL,
    max_shards   integer,
    shards       integer[]   NOT NULL DEFAULT '{{}}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now())""",
)


@dataclass(frozen=True, slots=True)
class Generation:
    slot: str
    number: int
    publication: str
    shards: int
    state: str
    starts_at: int | None
    paused_by: int | None

    def shard_list(self) -> list[Shard]:
        if self.number == 0:
            # Today's layout, recorded only while a reshard drains it.
            return [unsharded(self.slot, self.publication)]
        return [dataclasses.replace(shard, starts_at=self.starts_at)
                for shard in shards_of(self.slot, self.publication, self.number, self.shards)]


@dataclass(frozen=True, slots=True)
class Sharding:
    """Every generation of one slot family, oldest first; ``current`` is the newest one."""

    generations: tuple[Generation, ...]

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    def older(self) -> tuple[Generation, ...]:
        return self.generations[:-1]

    def all_shards(self) -> list[Shard]:
        return [shard for g in self.generations for shard in g.shard_list()]


def streaming_generation(sharding: Sharding | None, reshard_running: bool) -> Generation | None:
    """The generation workers stream: the newest active one; a paused one only once its reshard died."""
    if sharding is None:
        return None
    for generation in reversed(sharding.generations):
        if generation.state == ACTIVE:
            return generation
        if generation.state == PAUSED and not reshard_running:
            return generation
    return None


class ShardingUnreadable(ShardError):
    """The role may not read the generations table: the message gives the GRANT."""


def table(schema: str, name: str) -> sql.Composable:
    return sql.Identifier(schema, name)


def create_tables(conn: Conn, schema: str) -> None:
    for ddl in _DDL:
        conn.execute(sql.SQL(ddl).format(generations=table(schema, GENERATIONS), workers=table(schema, WORKERS)))


def tables_exist(conn: Conn, schema: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (schema, GENERATIONS)
    ).fetchone()
    return bool(row and row[0])


def read_sharding(conn: Conn, schema: str, slot: str) -> Sharding | None:
    """The slot family's generations, or None when it is not sharded (today's layout)."""
    if not tables_exist(conn, schema):
        return None
    try:
        rows = conn.execute(
            sql.SQL(
                "SELECT slot, generation, publication, shards, state, starts_at::text, paused_by "
                "FROM {} WHERE slot = %s ORDER BY generation"
            ).format(table(schema, GENERATIONS)),
            (slot,),
        ).fetchall()
    except errors.InsufficientPrivilege:
        # Without it no command can tell whether the outbox is sharded, nor which slots to read.
        role = sql.Identifier(conn.info.user).as_string(conn)
        raise ShardingUnreadable(
            f"role {conn.info.user} may not read {schema}.{GENERATIONS}, which lists the outbox's shards: "
            f"GRANT SELECT ON {table(schema, GENERATIONS).as_string(conn)}, {table(schema, WORKERS).as_string(conn)} "
            f"TO {role};"
        ) from None
    if not rows:
        return None
    return Sharding(tuple(
        Generation(str(s), int(g), str(p), int(n), str(state), None if at is None else parse_lsn(str(at)),
                   None if by is None else int(by))
        for s, g, p, n, state, at, by in rows
    ))


def shards_to_stream(sharding: Sharding | None, slot: str, publication: str) -> list[Shard]:
    """The shards of the active generation, or today's single slot."""
    if sharding is None:
        return [unsharded(slot, publication)]
    return sharding.current.shard_list()


def insert_generation(
    conn: Conn, schema: str, *, slot: str, generation: int, publication: str, outbox: tuple[str, str], shards: int,
    state: str, starts_at: int | None = None,
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (slot, generation, publication, outbox_schema, outbox_table, shards, state, starts_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::pg_lsn)"
        ).format(table(schema, GENERATIONS)),
        (slot, generation, publication, outbox[0], outbox[1], shards, state,
         None if starts_at is None else format_lsn(starts_at)),
    )


def set_state(
    conn: Conn, schema: str, slot: str, generation: int, state: str, *, paused_by: int | None = None,
    starts_at: int | None = None,
) -> None:
    assert state in STATES
    conn.execute(
        sql.SQL(
            "UPDATE {} SET state = %s, paused_by = %s, starts_at = COALESCE(%s::pg_lsn, starts_at) "
            "WHERE slot = %s AND generation = %s"
        ).format(table(schema, GENERATIONS)),
        (state, paused_by, None if starts_at is None else format_lsn(starts_at), slot, generation),
    )


def delete_generation(conn: Conn, schema: str, slot: str, generation: int) -> None:
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE slot = %s AND generation = %s").format(table(schema, GENERATIONS)),
        (slot, generation),
    )


# -- the workers and their locks -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Worker:
    worker_id: str
    host: str
    pid: int
    backend_pid: int
    max_shards: int | None
    shards: tuple[int, ...]
    started_at: object
    heartbeat_age: float
    alive: bool  # its lock session still holds its member lock


def list_workers(conn: Conn, schema: str, slot: str) -> list[Worker]:
    """Every registered worker of the slot family, oldest first, with whether its session is alive."""
    rows = conn.execute(
        sql.SQL(
            "SELECT w.worker_id, w.host, w.pid, w.backend_pid, w.max_shards, w.shards, w.started_at, "
            "extract(epoch FROM now() - w.heartbeat_at)::float8, EXISTS ("
            "  SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            "  AND l.pid = w.backend_pid AND l.classid::text::bigint = (w.member_key >> 32) & 4294967295"
            "  AND l.objid::text::bigint = w.member_key & 4294967295) "
            "FROM {} w WHERE w.slot = %s ORDER BY w.started_at, w.worker_id"
        ).format(table(schema, WORKERS)),
        (slot,),
    ).fetchall()
    return [Worker(str(w), str(h), int(p), int(b), m, tuple(sh or ()), started, float(age), bool(alive))
            for w, h, p, b, m, sh, started, age, alive in rows]


def advisory_locks(conn: Conn) -> dict[tuple[int, int], int]:
    """(classid, objid) -> pid of every bigint-keyed advisory lock held in this database."""
    rows = conn.execute(
        "SELECT classid::text::bigint, objid::text::bigint, pid FROM pg_locks "
        "WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    return {(int(c), int(o)): int(pid) for c, o, pid in rows}


def key_holder(conn: Conn, key: int) -> int | None:
    """The backend pid holding the advisory lock ``key``, if any."""
    return advisory_locks(conn).get(split_key(key))


def try_lock(conn: Conn, key: int) -> bool:
    """pg_try_advisory_lock: a session-level lock, held until unlocked or the session ends."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def unlock(conn: Conn, key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def slot_active_pid(conn: Conn, slot: str) -> int | None:
    row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def slots_confirmed(conn: Conn, slots: list[str], lsn: int) -> bool:
    """Whether every one of ``slots`` exists and has confirmed ``lsn``."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE confirmed_flush_lsn >= %s::pg_lsn) FROM pg_replication_slots "
        "WHERE slot_name = ANY(%s)", (format_lsn(lsn), slots),
    ).fetchone()
    return bool(row and row[0] == len(slots))


def create_plain_slot(conn: Conn, name: str, *, failover: bool = False) -> int:
    """A pgoutput slot, no snapshot; its consistent point (every commit from there on is sent).
    ``failover`` (PostgreSQL 17+, checked by the caller): standbys keep it, synchronised."""
    if failover:
        row = conn.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput', false, false, "
                           "true)", (name,)).fetchone()
    else:
        row = conn.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                           (name,)).fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def switch_generation(conn: Conn, schema: str, slot: str, number: int, starts_at: int) -> None:
    """In one transaction: generation ``number`` streams from ``starts_at``, the ones before it drain."""
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET state = CASE WHEN generation = %s THEN 'active' ELSE 'draining' END, "
                    "starts_at = CASE WHEN generation = %s THEN %s::pg_lsn ELSE starts_at END, paused_by = NULL "
                    "WHERE slot = %s AND generation <= %s AND state <> 'draining'").format(
                table(schema, GENERATIONS)),
            (number, number, format_lsn(starts_at), slot, number),
        )

"""``cdc outbox prune``: drop whole outbox partitions past the retention, never one ClickHouse may still lack.

A partition P, holding created_at in [lower, upper), is dropped only when all of these hold:

1. P is a plain range partition (never the default one) and ``upper <= now() - older_than``.
2. Fence: prune takes a SHARE lock on P (waiting at most the lock timeout). Every
   transaction that wrote into P has then ended, and none can until prune is done.
   It then reads W = pg_current_wal_insert_lsn(): every row in P committed before W.
3. The slot (on a sharded outbox: every slot of every generation) exists, is valid,
   and its confirmed_flush_lsn reaches W (prune waits up
   to ``wait`` seconds for a running ``cdc run`` to acknowledge that far). ``cdc run``
   acknowledges only what ClickHouse holds, so every transaction that wrote into P
   was stored (or dead-lettered, or was a duplicate of a stored unique_id).
4. ClickHouse's high-water mark is a streamed event committed at or after ``upper``.
5. P's oldest and newest rows (by id) are in ClickHouse: in the events table (by
   unique_id) or the dead-letter table. This catches what 3 cannot: a slot created
   after rows of P were written (``cdc slot create`` copies nothing), a publication
   that did not cover the outbox, a different ClickHouse database.

An empty P needs only 1 and 2. Not detected: a hole strictly inside P (a slot dropped
and recreated between its oldest and newest rows, without ``cdc backfill``).
Everything runs in one transaction; the drops take the outbox's ACCESS EXCLUSIVE lock
for a moment at the end (bounded by the lock timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from ..core import positions
from ..lsn import format_lsn, parse_lsn
from ..pg.connect import Conn, describe
from ..pg.partitions import LOCK_KEY, Partition, require_range_partitioned
from ..pg.slots import get_slot
from ..sink.base import SinkAdmin
from . import AdminError


@dataclass(slots=True)
class Pruned:
    partition: Partition
    action: str = "kept"        # dropped | would drop | kept
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        p = self.partition
        return {"name": p.name, "from": p.lower.isoformat() if p.lower else None,
                "to": p.upper.isoformat() if p.upper else None, "estimated_rows": p.estimated_rows,
                "action": self.action, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    unique_id: str
    event_type: str
    occurred_at: datetime


def prune(
    conn: Conn, *, schema: str, table: str, slots: Sequence[str], open_warehouse: Callable[[], SinkAdmin],
    older_than: timedelta, dry_run: bool, wait: float, lock_timeout_ms: int = 5000, poll: float = 0.2,
) -> list[Pruned]:
    """Decide, and unless ``dry_run`` drop, every partition past the retention; see the module docstring."""
    parts = require_range_partitioned(conn, schema, table)
    now: datetime = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    cutoff = now - older_than
    results = [Pruned(p) for p in parts if p.leaf and not p.is_default and p.upper is not None and p.upper <= cutoff]
    if not results:
        return []
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",))
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        except psycopg.errors.LockNotAvailable:
            raise AdminError("another `cdc outbox maintain` or `prune` is running: try again later") from None
        pending = _fence(conn, results)
        fence = parse_lsn(str(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]))  # type: ignore[index]
        edges = {id(r): _edges(conn, r.partition) for r in pending}
        loaded = [r for r in pending if edges[id(r)] is not None]
        if loaded:
            _check_delivery(conn, loaded, edges, slots=slots, fence=fence, wait=wait, poll=poll,
                            open_warehouse=open_warehouse, relation=f"{schema}.{table}")
        for r in pending:
            if r.reason:
                continue
            if dry_run:
                r.action = "would drop"
                continue
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(r.partition.schema, r.partition.name)))
            except psycopg.Error as exc:
                r.reason = f"cannot drop: {describe(exc)}"
                continue
            r.action = "dropped"
    return results


def _fence(conn: Conn, results: list[Pruned]) -> list[Pruned]:
    """SHARE-lock each partition (no writer left, none can start); the ones locked."""
    locked = []
    for r in results:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
                    sql.Identifier(r.partition.schema, r.partition.name)))
        except psycopg.errors.LockNotAvailable:
            r.reason = "busy (a transaction is writing into it or holds a lock): try again later"
            continue
        locked.append(r)
    return locked


def _edges(conn: Conn, p: Partition) -> tuple[_Row, _Row] | None:
    """The partition's oldest and newest rows by id, or None when it is empty."""
    rows = []
    for order in ("ASC", "DESC"):
        row = conn.execute(sql.SQL(
            "SELECT id, unique_id, event_type, occurred_at FROM {} ORDER BY id {} LIMIT 1"
        ).format(sql.Identifier(p.schema, p.name), sql.SQL(order))).fetchone()
        if row is None:
            return None
        rows.append(_Row(int(row[0]), str(row[1]), str(row[2]), row[3]))
    return rows[0], rows[1]


def _check_delivery(
    conn: Conn, loaded: list[Pruned], edges: dict[int, tuple[_Row, _Row] | None], *, slots: Sequence[str],
    fence: int, wait: float, poll: float, open_warehouse: Callable[[], SinkAdmin], relation: str,
) -> None:
    deadline = time.monotonic() + wait
    refusal = next((why for slot in slots
                    if (why := _wait_for_slot(conn, slot, fence, max(0.0, deadline - time.monotonic()), poll))), None)
    if refusal:
        for r in loaded:
            r.reason = refusal
        return
    with open_warehouse() as wh:
        latest = wh.latest()
        for r in loaded:
            upper = r.partition.upper
            assert upper is not None
            if latest is None or positions.is_synthetic(latest.commit_lsn):
                r.reason = ("ClickHouse holds no streamed event yet (only the initial copy or backfill): "
                            "nothing shows delivery has passed this partition")
                continue
            committed = latest.committed_at if latest.committed_at.tzinfo else latest.committed_at.replace(
                tzinfo=upper.tzinfo)
            if committed < upper:
                r.reason = (f"ClickHouse's newest event was committed at {committed.isoformat()}, before this "
                            "partition ends: kept until a later event is delivered")
                continue
            for row in edges[id(r)] or ():
                if not (wh.has_event(row.unique_id, row.event_type, row.occurred_at)
                        or wh.has_dead_letter(relation, row.id)):
                    r.reason = (f"outbox row id {row.id} (unique_id {row.unique_id!r}) is not in ClickHouse: "
                                f"deliver it first (`cdc backfill --since '{r.partition.lower}'`)")
                    break


def _wait_for_slot(conn: Conn, slot: str, fence: int, wait: float, poll: float) -> str | None:
    """None once the slot has acknowledged ``fence``; otherwise why not (after waiting up to ``wait`` s)."""
    deadline = time.monotonic() + wait
    while True:
        info = get_slot(conn, slot)
        if info is None:
            return f"replication slot {slot} does not exist: nothing shows these rows were delivered"
        if info.invalidated or info.confirmed_flush_lsn is None:
            return f"replication slot {slot} is invalidated: nothing shows these rows were delivered"
        confirmed = parse_lsn(info.confirmed_flush_lsn)
        if confirmed >= fence:
            return None
        if time.monotonic() >= deadline:
            return (f"slot {slot} has acknowledged {info.confirmed_flush_lsn}, not yet {format_lsn(fence)} "
                    f"(is `cdc run` running?): try again once it has")
        time.sleep(poll)

"""The PostgreSQL half of a reconciliation: one consistent snapshot of the outbox, and what the server computes in it.

Everything is read inside one REPEATABLE READ, READ ONLY transaction: either
a snapshot of its own (``cdc verify``), whose first statement also reads the
WAL insert position (every transaction visible in the snapshot committed
before it), or a snapshot exported by a new replication slot (``cdc run
--create-slot``), which is exact at the slot's consistent point.

The scope is "outbox rows with id >= low_id". ``--since`` maps to the lowest
id created at or after it: a few rows around that edge created a moment before
may come along (ids are handed out at insert, created_at is the transaction's
start), which only widens what is checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import psycopg
from psycopg import sql

from ..core.outbox import REQUIRED_COLUMNS
from ..core.reconcile import BUCKET_MASK, BUCKET_SHIFT, BUCKETS, Bucket, read_sums
from ..errors import ReconcileError
from .connect import Conn, describe
from .partitions import list_partitions

# Sorting and de-duplicating millions of hashes wants more than the default 4MB.
_WORK_MEM: Final = "256MB"
_FETCH: Final = 50_000


def pg_hash(text_sql: str) -> str:
    """h() of cdc/core/reconcile.py for a text expression (bigint)."""
    return f"('x' || substr(md5({text_sql}), 1, 16))::bit(64)::bigint"


def pg_bucket(hash_sql: str) -> str:
    """The bucket of a bigint hash (``>>`` sign-extends, hence the mask)."""
    return f"(({hash_sql} >> {BUCKET_SHIFT}) & {BUCKET_MASK})"


@dataclass(frozen=True, slots=True)
class OutboxSums:
    buckets: dict[int, Bucket]
    rows: int  # outbox rows in scope, retries included


class OutboxSnapshot:
    """The outbox as one snapshot sees it. ``open()`` first; ``close()`` ends the transaction."""

    def __init__(self, conn: Conn, schema: str, table: str, *, snapshot_name: str | None = None) -> None:
        self._conn = conn
        self.relation = f"{schema}.{table}"
        self._names = (schema, table)
        self._table = sql.Identifier(schema, table)
        self._snapshot_name = snapshot_name
        self._scope = sql.SQL("id >= %(low)s AND unique_id IS NOT NULL")
        self._hash = sql.SQL(pg_hash("unique_id"))
        self._bucket = sql.SQL(pg_bucket("h"))

    def open(self) -> int:
        """Start the snapshot; returns the WAL insert position read in it."""
        conn = self._conn
        if conn.execute("SELECT to_regclass(%s)", (self._table.as_string(conn),)).fetchone() == (None,):
            raise ReconcileError(f"outbox table {self.relation} does not exist: check --outbox-schema and "
                                 "--outbox-table, or run `cdc migrate`")
        conn.autocommit = False
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if self._snapshot_name is not None:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self._snapshot_name)))
        # The snapshot is taken by this first statement, so the position it reads
        # is at or past the commit of every transaction the snapshot sees.
        lsn = int(conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()[0])  # type: ignore[index]
        conn.execute("SELECT set_config('work_mem', %s, true)", (_WORK_MEM,))
        return lsn

    def close(self) -> None:
        if not self._conn.closed:
            self._conn.rollback()
            self._conn.autocommit = True

    def low_id(self, since: datetime | None) -> int | None:
        """The scope's first id: the lowest created at or after ``since`` (any, without); None when none is."""
        query = sql.SQL("SELECT min(id) FROM {}").format(self._table)
        params: dict[str, Any] = {}
        if since is not None:
            query = sql.SQL("{} WHERE created_at >= %(since)s").format(query)
            params["since"] = since
        row = self._run(query, params).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def sums(self, low_id: int) -> OutboxSums:
        """Per bucket, the count and checksum of the distinct unique_ids of rows with id >= low_id."""
        query = sql.SQL(
            "SELECT b, count(*), sum(h), sum(n) FROM ("
            " SELECT h, {bucket} AS b, n FROM ("
            "  SELECT h, count(*) AS n FROM (SELECT {hash} AS h FROM {table} WHERE {scope} OFFSET 0) AS r"
            "  GROUP BY h) AS d) AS g "
            "GROUP BY b"
        ).format(bucket=self._bucket, hash=self._hash, table=self._table, scope=self._scope)
        rows = self._run(query, {"low": low_id}).fetchall()
        return OutboxSums(read_sums((b, n, s) for b, n, s, _ in rows), sum(int(r[3]) for r in rows))

    def hashes(self, low_id: int, buckets: Sequence[int]) -> Iterator[tuple[int, int, int, int]]:
        """(h, id, created_at in Unix microseconds, partition oid) of the rows in scope whose hash is in
        ``buckets``, sorted by (h, id)."""
        # Which buckets, as a 4096-entry boolean array: a subscript per row, where = ANY(list) would scan the list.
        query = sql.SQL(
            "SELECT h, id, ((extract(epoch FROM created_at) * 1000000)::bigint), tableoid::bigint FROM ("
            " SELECT {hash} AS h, id, created_at, tableoid FROM {table} WHERE {scope} OFFSET 0) AS r "
            "WHERE (%(wanted)s::boolean[])[{bucket} + 1] ORDER BY h, id"
        ).format(hash=self._hash, table=self._table, scope=self._scope, bucket=self._bucket)
        wanted = [False] * BUCKETS
        for b in buckets:
            wanted[b] = True
        with self._conn.cursor(name="cdc_reconcile_hashes", binary=True) as cur:
            cur.itersize = _FETCH
            try:
                cur.execute(query, {"low": low_id, "wanted": wanted})
                for h, outbox_id, created, partition in cur:
                    yield int(h), int(outbox_id), int(created), int(partition)
            except psycopg.Error as exc:
                raise ReconcileError(f"cannot read {self.relation}: {describe(exc)}") from None

    def unique_ids(self, ids: Sequence[int]) -> dict[int, str]:
        """outbox id -> unique_id, for naming rows in a report."""
        if not ids:
            return {}
        query = sql.SQL("SELECT id, unique_id FROM {} WHERE id = ANY(%(ids)s)").format(self._table)
        return {int(i): str(u) for i, u in self._run(query, {"ids": list(ids)}).fetchall()}

    def rows(self, low: int, high: int, ids: Sequence[int]) -> Iterator[tuple[tuple[bytes | None, ...], int, datetime]]:
        """The rows with these ids, created between ``low`` and ``high`` (Unix microseconds), in id order: as text
        like pgoutput sends, their id and their created_at (what ``cdc.pg.outbox_range`` gives backfill).

        Read through the outbox itself (a role may read only it, not its
        partitions); the created_at range lets the planner skip the partitions
        outside it, and each id is found through the primary key.
        """
        if not ids:
            return
        query = sql.SQL(
            "COPY (SELECT {}, created_at FROM {} WHERE created_at BETWEEN {} AND {} AND id = ANY({}) ORDER BY id) "
            "TO STDOUT"
        ).format(
            sql.SQL(", ").join(sql.Identifier(c) for c in REQUIRED_COLUMNS), self._table,
            # Our own values, adapted by psycopg: no foreign text reaches the statement.
            sql.Literal(_from_micros(low)), sql.Literal(_from_micros(high)), sql.Literal([int(i) for i in ids]),
        )
        n = len(REQUIRED_COLUMNS)
        try:
            with self._conn.cursor().copy(query) as copy:
                for row in copy.rows():
                    values = tuple(None if v is None else str(v).encode() for v in row[:n])
                    yield values, int(row[0]), datetime.fromisoformat(str(row[n]))
        except psycopg.Error as exc:
            raise ReconcileError(f"cannot read {self.relation}: {describe(exc)}") from None

    def scanned_bytes(self, since: datetime | None) -> int:
        """Heap bytes of the outbox's tables a pass over the scope reads: every partition not wholly before it."""
        parts = list_partitions(self._conn, *self._names)
        if parts is None:
            query = sql.SQL("SELECT pg_relation_size(%(t)s::regclass)")
            return int(self._run(query, {"t": self._table.as_string(self._conn)}).fetchone()[0])  # type: ignore[index]
        total = 0
        for p in parts:
            if p.leaf and (since is None or p.upper is None or p.upper > since):
                name = sql.Identifier(p.schema, p.name).as_string(self._conn)
                total += int(self._run(sql.SQL("SELECT pg_relation_size(%(t)s::regclass)"), {"t": name}).fetchone()[0])  # type: ignore[index]
        return total

    def _run(self, query: sql.SQL | sql.Composed, params: dict[str, Any]) -> psycopg.Cursor[tuple[Any, ...]]:
        try:
            return self._conn.execute(query, params)
        except psycopg.Error as exc:
            raise ReconcileError(f"cannot read {self.relation}: {describe(exc)}") from None


def _from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


def current_unique_ids(conn: Conn, schema: str, table: str, ids: Sequence[int]) -> dict[int, str]:
    """outbox id -> unique_id as the outbox holds them now (outside any snapshot)."""
    query = sql.SQL("SELECT id, unique_id FROM {} WHERE id = ANY(%s)").format(sql.Identifier(schema, table))
    try:
        return {int(i): str(u) for i, u in conn.execute(query, (list(ids),)).fetchall()}
    except psycopg.Error as exc:
        raise ReconcileError(f"cannot read {schema}.{table}: {describe(exc)}") from None

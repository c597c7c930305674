"""The ClickHouse half of a reconciliation: what the events and dead-letter tables hold, computed by the server.

A unique_id counts as stored when the events table holds it, or the
dead-letter table holds the outbox row it came in (its row_json carries the
row's "id" and "unique_id"; rows of other tables and rows without a text
unique_id are left out).

In scope are the rows that claim an outbox id at or past the scope's first
(``outbox_id`` for events, the "id" in row_json for dead letters), plus every
row that claims none (outbox_id <= 0: no outbox row can explain it; with
``--since``, only those committed since then). Older ids are events from before
the outbox's retention, or before ``--since``. Rows committed at or after the
snapshot's WAL position are left out: the outbox snapshot cannot see them.
Backfilled and copied rows carry positions below every WAL position (see
cdc/core/positions.py), so they always count; so does a row claiming a
position past the server's own (no transaction wrote it).

Every query is computed by the server; what comes back is per-bucket sums,
or for the buckets that differ, 8-byte hashes in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

from ...core.reconcile import BUCKET_MASK, BUCKET_SHIFT, Bucket, StoredScope, read_sums
from ...errors import ReconcileError
from .ddl import SchemaNames

_DL_UNIQUE_ID: Final = "visitParamExtractString(row_json, 'unique_id')"
_DL_OUTBOX_ID: Final = "toInt64OrZero(visitParamExtractString(row_json, 'id'))"
# orjson writes no space after a colon, and escapes quotes inside values, so a
# top-level text unique_id (never null) is exactly this.
_DL_HAS_UNIQUE_ID: Final = "position(row_json, '\"unique_id\":\"') > 0"


# One mutation, written out in full: ClickHouse parses at most 256 KB of query.
MAX_DELETE: Final = 1_000
_MUTATION_TIMEOUT: Final = 600.0


def ch_hash(string_sql: str) -> str:
    """h() of cdc/core/reconcile.py for a String expression (Int64): MD5 is raw bytes, read little-endian."""
    return f"reinterpretAsInt64(reverse(substring(MD5({string_sql}), 1, 8)))"


def ch_bucket(hash_sql: str) -> str:
    return f"bitAnd(bitShiftRight({hash_sql}, {BUCKET_SHIFT}), {BUCKET_MASK})"


class ClickHouseStoredIds:
    """The sink's tables, by buckets of id hashes (``cdc.sink.base.StoredIds``), over a connection of its own."""

    def __init__(self, conn: Any, names: SchemaNames, relation: str) -> None:
        self._conn = conn
        self._names = names
        self._relation = relation
        self.where = f"{names.plain.database}.{names.plain.events}"
        self.max_delete = MAX_DELETE

    def last_read(self) -> tuple[int, int]:
        return self._conn.last_read()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ClickHouseStoredIds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def missing_tables(self) -> list[str]:
        plain = self._names.plain
        rows = self._conn.query(
            "SELECT name FROM system.tables WHERE database = %(db)s AND name IN %(names)s",
            {"db": plain.database, "names": (plain.events, plain.dead_letter)},
        )
        present = {str(r[0]) for r in rows}
        return [f"{plain.database}.{t}" for t in (plain.events, plain.dead_letter) if t not in present]

    def sums(self, scope: StoredScope) -> dict[int, Bucket]:
        """Per bucket, the count and checksum of the distinct unique_ids stored in scope."""
        inner = self._union(
            f"{self._in_scope('outbox_id', 'committed_at', scope)}",
            f"{self._in_scope(_DL_OUTBOX_ID, 'committed_at', scope)}",
            columns="h",
        )
        query = f"SELECT {ch_bucket('h')} AS b, count(), sum(h) FROM (SELECT DISTINCT h FROM ({inner})) GROUP BY b"
        return read_sums(self._conn.query(query, self._params(scope)))

    def hashes(self, scope: StoredScope, buckets: Sequence[int]) -> Iterator[tuple[int, int, int]]:
        """(h, in scope 0/1, an outbox id claimed by an in-scope row) of every stored id in ``buckets``, by h.

        Rows out of scope come too: they account for outbox rows (a retry of an
        event delivered before the scope) without ever counting as unexpected.
        """
        wanted = ", ".join(str(int(b)) for b in buckets)
        inner = self._union(
            f"{ch_bucket(ch_hash('unique_id'))} IN ({wanted})",
            f"{ch_bucket(ch_hash(_DL_UNIQUE_ID))} IN ({wanted})",
            columns="h, s, o",
            scoped=scope,
        )
        query = f"SELECT h, max(s), argMax(o, s) FROM ({inner}) GROUP BY h ORDER BY h"
        for h, in_scope, outbox_id in self._conn.stream(query, self._params(scope)):
            yield int(h), int(in_scope), int(outbox_id)

    def unique_ids(self, hashes: Sequence[int]) -> dict[int, tuple[str, int]]:
        """hash -> (unique_id, outbox id) of stored rows, for naming them in a report."""
        if not hashes:
            return {}
        wanted = ", ".join(str(int(h)) for h in hashes)
        names = self._names
        query = (
            f"SELECT h, any(u), any(o) FROM ("
            f"SELECT {ch_hash('unique_id')} AS h, unique_id AS u, outbox_id AS o FROM {names.events} "
            f"WHERE h IN ({wanted}) UNION ALL "
            f"SELECT {ch_hash(_DL_UNIQUE_ID)} AS h, {_DL_UNIQUE_ID} AS u, {_DL_OUTBOX_ID} AS o FROM {names.dead_letter} "
            f"WHERE relation = %(relation)s AND {_DL_HAS_UNIQUE_ID} AND h IN ({wanted})) GROUP BY h"
        )
        return {int(h): (str(u), int(o)) for h, u, o in self._conn.query(query, {"relation": self._relation})}

    def delete(self, scope: StoredScope, unique_ids: Sequence[str]) -> int:
        """Delete the rows in scope with these unique_ids from the events and dead-letter tables, and their
        ledger entries (a position past the server's would hold the high-water mark there); waits until
        ClickHouse has applied it. Returns how many unique_ids."""
        if not unique_ids:
            return 0
        if len(unique_ids) > MAX_DELETE:
            raise ReconcileError(f"{len(unique_ids)} unexpected ids are more than --delete-unexpected removes at "
                                 f"once ({MAX_DELETE}): look at them first (cdc verify --json --samples N)")
        names = self._names
        params = self._params(scope) | {"ids": tuple(unique_ids)}
        events = f"unique_id IN %(ids)s AND {self._in_scope('outbox_id', 'committed_at', scope)}"
        positions = self._conn.query(f"SELECT DISTINCT commit_lsn, commit_seq FROM {names.events} WHERE {events}",
                                     params)
        statements = [
            f"ALTER TABLE {names.events} DELETE WHERE {events}",
            f"ALTER TABLE {names.dead_letter} DELETE WHERE relation = %(relation)s AND {_DL_HAS_UNIQUE_ID} "
            f"AND {_DL_UNIQUE_ID} IN %(ids)s AND {self._in_scope(_DL_OUTBOX_ID, 'committed_at', scope)}",
        ]
        if positions:
            listed = ", ".join(f"({int(lsn)}, {int(seq)})" for lsn, seq in positions)
            statements.append(f"ALTER TABLE {names.progress} DELETE WHERE (commit_lsn, commit_seq) IN ({listed})")
        for statement in statements:
            self._conn.query(statement, params)
        self._wait_for_mutations(_MUTATION_TIMEOUT)
        return len(unique_ids)

    def _wait_for_mutations(self, timeout: float, poll: float = 0.2) -> None:
        """Until ClickHouse has applied every ALTER ... DELETE on the sink's tables (they run in the background)."""
        plain = self._names.plain
        deadline = time.monotonic() + timeout
        while True:
            rows = self._conn.query(
                "SELECT count() FROM system.mutations WHERE database = %(db)s AND table IN %(tables)s AND NOT is_done",
                {"db": plain.database, "tables": (plain.events, plain.dead_letter, plain.progress)},
            )
            if not rows[0][0]:
                return
            if time.monotonic() >= deadline:
                raise ReconcileError(f"ClickHouse has not finished deleting after {timeout:.0f}s: see "
                                     "system.mutations, then run `cdc verify` again")
            time.sleep(poll)

    def _union(self, events_where: str, dl_where: str, *, columns: str, scoped: StoredScope | None = None) -> str:
        names = self._names
        if scoped is None:
            ev = f"{ch_hash('unique_id')} AS h"
            dl = f"{ch_hash(_DL_UNIQUE_ID)} AS h"
        else:
            ev = (f"{ch_hash('unique_id')} AS h, {self._in_scope('outbox_id', 'committed_at', scoped)} AS s, "
                  "outbox_id AS o")
            dl = (f"{ch_hash(_DL_UNIQUE_ID)} AS h, {self._in_scope(_DL_OUTBOX_ID, 'committed_at', scoped)} AS s, "
                  f"{_DL_OUTBOX_ID} AS o")
        assert columns in ("h", "h, s, o")
        return (
            f"SELECT {ev} FROM {names.events} WHERE {events_where} "
            f"UNION ALL SELECT {dl} FROM {names.dead_letter} "
            f"WHERE relation = %(relation)s AND {_DL_HAS_UNIQUE_ID} AND {dl_where}"
        )

    @staticmethod
    def _in_scope(outbox_id: str, committed_at: str, scope: StoredScope) -> str:
        claimed = "0" if scope.low_id is None else f"{outbox_id} >= %(low)s"
        unexplained = f"{outbox_id} <= 0"
        if scope.since is not None:
            unexplained += f" AND {committed_at} >= toDateTime(%(since)s)"
        committed = "commit_lsn < %(snapshot)s"
        if scope.upper_lsn is not None:
            committed = f"({committed} OR commit_lsn > %(upper)s)"
        return f"toUInt8((({claimed}) OR ({unexplained})) AND {committed})"

    def _params(self, scope: StoredScope) -> dict[str, Any]:
        params: dict[str, Any] = {"relation": self._relation, "snapshot": scope.snapshot_lsn}
        if scope.low_id is not None:
            params["low"] = scope.low_id
        if scope.since is not None:
            params["since"] = scope.since
        if scope.upper_lsn is not None:
            params["upper"] = scope.upper_lsn
        return params

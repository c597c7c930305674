"""The outbox rows created in a time range, read from one consistent snapshot (for ``cdc backfill``).

One REPEATABLE READ, READ ONLY transaction: the count shown and the rows sent
agree. Rows are filtered on created_at (the partition key, so only the
partitions in range are read) and come in id order, as text like pgoutput's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import psycopg
from psycopg import sql

from ..core.outbox import REQUIRED_COLUMNS
from ..errors import AdminError
from .connect import Conn, describe


def timestamp(conn: Conn, flag: str, text: str) -> datetime:
    """``text`` as PostgreSQL reads a timestamptz (session time zone UTC), or a one-line refusal."""
    try:
        value = conn.execute("SELECT %s::timestamptz", (text,)).fetchone()[0]  # type: ignore[index]
    except psycopg.Error as exc:
        raise AdminError(f"{flag} {text!r} is not a timestamp ({describe(exc)}): write it like 2026-11-24 or "
                         "'2026-11-24 13:00:00+00'") from None
    if not isinstance(value, datetime):
        raise AdminError(f"{flag} {text!r} is not a finite timestamp")
    return value


class OutboxRange:
    """Rows with ``since <= created_at < until`` (no upper bound when ``until`` is None) of one outbox table."""

    def __init__(self, conn: Conn, schema: str, table: str, since: datetime, until: datetime | None) -> None:
        self._conn = conn
        self._schema, self._table = schema, table
        self.since, self.until = since, until

    def open(self) -> tuple[int, int | None, int | None]:
        """Start the snapshot: (count, lowest id, highest id) of the rows in range."""
        conn = self._conn
        conn.autocommit = False
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            count, low, high = conn.execute(
                sql.SQL("SELECT count(*), min(id), max(id) FROM {} WHERE {}").format(self._name(), self._where())
            ).fetchone()  # type: ignore[misc]
        except psycopg.Error as exc:
            raise AdminError(f"cannot read {self._schema}.{self._table}: {describe(exc)}") from None
        return int(count), None if low is None else int(low), None if high is None else int(high)

    def rows(self, shard_filter: str | None = None) -> Iterator[tuple[tuple[bytes | None, ...], int, datetime]]:
        """(REQUIRED_COLUMNS as text bytes, id, created_at) of each row in range, in id order.

        ``shard_filter``: one shard's rows only (its publication's row filter, cdc/shards/layout.py: our own text).
        """
        n_columns = len(REQUIRED_COLUMNS)
        where = self._where()
        if shard_filter is not None:
            where = sql.SQL("{} AND {}").format(where, sql.SQL(shard_filter))
        query = sql.SQL("COPY (SELECT {}, created_at FROM {} WHERE {} ORDER BY id) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in REQUIRED_COLUMNS), self._name(), where,
        )
        with self._conn.cursor().copy(query) as copy:
            for row in copy.rows():
                values = tuple(None if v is None else str(v).encode() for v in row[:n_columns])
                yield values, int(row[0]), datetime.fromisoformat(str(row[n_columns]))

    def close(self) -> None:
        """End the snapshot (it only read)."""
        self._conn.rollback()

    def _name(self) -> sql.Composable:
        return sql.Identifier(self._schema, self._table)

    def _where(self) -> sql.Composable:
        # The bounds are datetimes PostgreSQL itself parsed: adapted as values, never pasted text.
        cond = sql.SQL("created_at >= {}").format(sql.Literal(self.since))
        if self.until is not None:
            cond = sql.SQL("{} AND created_at < {}").format(cond, sql.Literal(self.until))
        return cond

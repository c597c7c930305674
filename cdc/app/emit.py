"""``cdc.emit``: write one event to the outbox, in the caller's transaction (psycopg 3).

The whole point of the outbox is that the event commits or rolls back with the
business data. So these helpers never commit, and they refuse a connection
where their INSERT would commit on its own: an autocommit connection outside
``conn.transaction()``. A standalone event (nothing else to commit with it) is
allowed when asked for explicitly, with ``allow_autocommit=True``.

With a non-autocommit connection (psycopg's default) the INSERT joins the
transaction psycopg opens implicitly; the caller commits it, as for any other
statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from .row import INSERT_TEMPLATE, EmitError, Event, OutboxRow, OutsideTransactionError, prepare, prepare_all

__all__ = ["EmitError", "Event", "OutsideTransactionError", "emit", "emit_many"]


def emit(
    conn: psycopg.Connection[Any],
    event_type: str,
    payload: Mapping[str, Any],
    *,
    unique_id: str | None = None,
    environment: str | None = None,
    occurred_at: datetime | None = None,
    metadata_version: int = 1,
    schema: str = "public",
    table: str = "outbox",
    allow_autocommit: bool = False,
) -> str:
    """Insert one outbox row on ``conn``, inside the caller's transaction; return its unique_id.

    Call it inside the transaction that writes the business data, for example
    ``with conn.transaction(): ...; cdc.emit(conn, "order_placed", {...})``.
    It never commits: if that transaction rolls back, the event never existed.

    unique_id: the event's identity, a new uuid4 when not given. An application
    retry must pass the same value again: cdc delivers rows sharing a unique_id
    as one event. environment: ``CDC_ENVIRONMENT`` (or ``''``) when not given.
    occurred_at: timezone-aware; the transaction's start when not given.

    Raises EmitError (a ValueError) for a value the outbox cannot hold, before
    anything is sent, and OutsideTransactionError when the INSERT would commit on
    its own (autocommit outside ``conn.transaction()``) unless
    ``allow_autocommit=True``.
    """
    row = prepare(event_type, payload, unique_id=unique_id, environment=environment,
                  occurred_at=occurred_at, metadata_version=metadata_version)
    _require_transaction(conn, allow_autocommit)
    conn.execute(_insert(schema, table), _params(row))
    return row.unique_id


def emit_many(
    conn: psycopg.Connection[Any],
    events: Iterable[Event],
    *,
    environment: str | None = None,
    schema: str = "public",
    table: str = "outbox",
    allow_autocommit: bool = False,
) -> list[str]:
    """Insert several events in order, in the caller's transaction; return their unique_ids.

    Every event is checked before any is sent, so a bad one leaves the
    transaction untouched. One round trip for the lot (psycopg pipelines
    executemany).
    """
    rows = prepare_all(events, environment)
    if not rows:
        return []
    _require_transaction(conn, allow_autocommit)
    with conn.cursor() as cur:
        cur.executemany(_insert(schema, table), [_params(row) for row in rows])
    return [row.unique_id for row in rows]


def _require_transaction(conn: psycopg.Connection[Any], allow_autocommit: bool) -> None:
    if not isinstance(conn, psycopg.Connection):
        # An AsyncConnection lands here too: its execute() would return a coroutine nobody awaits.
        raise TypeError(f"cdc.emit needs a psycopg.Connection (psycopg 3), got {type(conn).__name__}")
    if allow_autocommit or not conn.autocommit:
        return
    if conn.info.transaction_status == TransactionStatus.IDLE:
        raise OutsideTransactionError(
            "cdc.emit: the connection is in autocommit mode outside a transaction, so the event would commit "
            "on its own, apart from your business data: call it inside `with conn.transaction():` "
            "(or pass allow_autocommit=True for an event that stands alone)"
        )


@lru_cache(maxsize=64)
def _insert(schema: str, table: str) -> sql.Composed:
    for value, what in ((schema, "schema"), (table, "table")):
        if not isinstance(value, str) or not value:
            raise EmitError(f"{what} must be a non-empty str, got {value!r}")
    return sql.SQL(INSERT_TEMPLATE).format(table=sql.Identifier(schema, table), payload=sql.SQL("%s"))


def _params(row: OutboxRow) -> tuple[object, ...]:
    encoded = row.payload_json
    # Serialised once, by prepare() (which had to, to validate it): hand psycopg the bytes.
    payload = Jsonb(encoded, dumps=lambda _obj: encoded)
    return (row.unique_id, row.event_type, row.environment, payload, row.metadata_version, row.occurred_at)

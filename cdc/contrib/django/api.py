"""``emit()`` for Django: one outbox row in the current ``transaction.atomic()`` block.

Outside an atomic block Django autocommits every statement, so the event would
commit apart from the business data (and survive its rollback): emit() refuses
that with OutsideTransactionError, unless ``allow_autocommit=True`` says the
event stands alone. Views under ATOMIC_REQUESTS, ``TestCase`` tests and
connections with AUTOCOMMIT off already run in a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from ...app.row import INSERT_TEMPLATE, Event, OutboxRow, OutsideTransactionError, prepare, prepare_all
from . import conf


def emit(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    unique_id: str | None = None,
    environment: str | None = None,
    occurred_at: datetime | None = None,
    metadata_version: int = 1,
    using: str = DEFAULT_DB_ALIAS,
    allow_autocommit: bool = False,
) -> str:
    """Insert one outbox row on database ``using``, in the current atomic block; return its unique_id.

    unique_id: a new uuid4 when not given; a retry must pass the same value
    (cdc delivers rows sharing a unique_id as one event). environment:
    settings.CDC_ENVIRONMENT, else the CDC_ENVIRONMENT variable, else ''.
    occurred_at: timezone-aware; the transaction's start when not given.
    Raises EmitError (a ValueError) before sending anything for a value the
    outbox cannot hold.
    """
    row = prepare(event_type, payload, unique_id=unique_id,
                  environment=conf.environment() if environment is None else environment,
                  occurred_at=occurred_at, metadata_version=metadata_version)
    connection = _connection(using, allow_autocommit)
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(), _params(row))
    return row.unique_id


def emit_many(
    events: Iterable[Event],
    *,
    environment: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
    allow_autocommit: bool = False,
) -> list[str]:
    """Insert several events in order, in the current atomic block; every one is checked before any is sent."""
    rows = prepare_all(events, conf.environment() if environment is None else environment)
    if not rows:
        return []
    connection = _connection(using, allow_autocommit)
    with connection.cursor() as cursor:
        cursor.executemany(_insert_sql(), [_params(row) for row in rows])
    return [row.unique_id for row in rows]


def _connection(using: str, allow_autocommit: bool) -> Any:
    connection = transaction.get_connection(using)
    conf.require_postgresql(connection)
    # get_autocommit() is False inside atomic blocks and on AUTOCOMMIT=False
    # connections: either way the caller's COMMIT decides.
    if not allow_autocommit and connection.get_autocommit():
        raise OutsideTransactionError(
            f"cdc emit() outside transaction.atomic() on database {using!r}: the event would commit on its own, "
            "apart from your business data; call it inside `with transaction.atomic(using=...)` "
            "(or pass allow_autocommit=True for an event that stands alone)"
        )
    return connection


def _insert_sql() -> str:
    # Text plus a cast rather than a driver-specific JSON wrapper: works the
    # same on Django's psycopg 3 and psycopg2 backends.
    return INSERT_TEMPLATE.format(table=conf.qualified_table(), payload="%s::jsonb")


def _params(row: OutboxRow) -> tuple[object, ...]:
    return (row.unique_id, row.event_type, row.environment, row.payload_json.decode(), row.metadata_version,
            row.occurred_at)

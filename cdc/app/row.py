"""One outbox row, checked before it reaches the database.

Shared by the psycopg helper (``cdc.emit``) and the Django one: a bad event is
refused here, in the application's own process and with a message that says
what to fix, instead of as a database error that aborts the caller's whole
transaction (PostgreSQL refuses NUL characters in text and ``\\u0000`` in
jsonb) or as a dead letter found days later downstream.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

ENVIRONMENT_VARIABLE = "CDC_ENVIRONMENT"
_INT4_MAX = 2**31 - 1


class EmitError(ValueError):
    """An event that cannot be written to the outbox as given."""


class OutsideTransactionError(RuntimeError):
    """emit() called where its row would not commit with the caller's business data."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event for ``emit_many``; the same fields as ``emit``'s arguments."""

    event_type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    unique_id: str | None = None
    occurred_at: datetime | None = None
    metadata_version: int = 1


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """The values of one outbox row; ``payload_json`` is the payload already serialised."""

    unique_id: str
    event_type: str
    environment: str
    payload_json: bytes
    metadata_version: int
    occurred_at: datetime | None  # None: now(), the transaction's start, as the column's default


# The one INSERT every helper sends, after its driver's quoting of the table and
# {payload} (a jsonb parameter). occurred_at uses COALESCE so one statement shape
# serves rows with and without it (emit_many mixes them) and stays prepared.
INSERT_TEMPLATE = (
    "INSERT INTO {table} (unique_id, event_type, environment, payload, metadata_version, occurred_at) "
    "VALUES (%s, %s, %s, {payload}, %s, COALESCE(%s, now()))"
)


def default_environment() -> str:
    """``CDC_ENVIRONMENT`` at call time, or ``''`` (the column's default)."""
    return os.environ.get(ENVIRONMENT_VARIABLE, "")


def _text(value: object, what: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise EmitError(f"{what} must be a str, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise EmitError(f"{what} must not be empty")
    if "\x00" in value:
        raise EmitError(f"{what} contains a NUL character, which PostgreSQL text cannot store")
    return value


def _unique_id(value: object) -> str:
    if value is None:
        return str(uuid.uuid4())
    if isinstance(value, uuid.UUID):
        return str(value)
    return _text(value, "unique_id")


def _payload(value: object) -> bytes:
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        raise EmitError("payload must be a dict (a JSON object), not its JSON text: pass the dict itself")
    if not isinstance(value, Mapping):
        raise EmitError(f"payload must be a dict (a JSON object), got {type(value).__name__}")
    try:
        encoded = orjson.dumps(value if isinstance(value, dict) else dict(value))
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise EmitError(f"payload is not JSON-serialisable: {exc}") from None
    # jsonb refuses the escaped NUL character anywhere in the document.
    if b"\\u0000" in encoded:
        raise EmitError("payload contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store")
    return encoded


def _occurred_at(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise EmitError(f"occurred_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise EmitError(
            "occurred_at must be timezone-aware (a naive datetime means a different instant in each session "
            "time zone): use datetime.now(timezone.utc)"
        )
    return value


def _metadata_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmitError(f"metadata_version must be an int, got {type(value).__name__}")
    if not 1 <= value <= _INT4_MAX:
        raise EmitError(f"metadata_version must be between 1 and {_INT4_MAX}, got {value}")
    return value


def prepare_all(events: Iterable[object], environment: object = None) -> list[OutboxRow]:
    """Check every event of an ``emit_many`` before any is sent."""
    rows = []
    for event in events:
        if not isinstance(event, Event):
            raise EmitError(f"emit_many takes cdc.Event objects, got {type(event).__name__}")
        rows.append(prepare(event.event_type, event.payload, unique_id=event.unique_id, environment=environment,
                            occurred_at=event.occurred_at, metadata_version=event.metadata_version))
    return rows


def prepare(
    event_type: object,
    payload: object,
    *,
    unique_id: object = None,
    environment: object = None,
    occurred_at: object = None,
    metadata_version: object = 1,
) -> OutboxRow:
    """Check every value and build the row; raises EmitError naming the value to fix."""
    return OutboxRow(
        unique_id=_unique_id(unique_id),
        event_type=_text(event_type, "event_type"),
        environment=_text(default_environment() if environment is None else environment, "environment",
                          empty_ok=True),
        payload_json=_payload(payload),
        metadata_version=_metadata_version(metadata_version),
        occurred_at=_occurred_at(occurred_at),
    )

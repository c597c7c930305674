"""Outbox rows sent with pgoutput's ``binary 'true'``: each value in its type's send format, read by type OID.

The walsender then skips every output function (timestamptz formatting is the
dearest), and the rows are cheaper here too: a timestamp is an int64 of
microseconds since 2000-01-01, an integer its big-endian bytes, jsonb a version
byte and the JSON text. Text-like values are the same bytes as in text mode, so
unique_ids, payloads and dead letters are identical in both modes.

Only the types below can be read. ``binary_readable`` says whether a table's
columns all are (checked before streaming: the option is per session); a
Relation that changes a required column to another type mid-stream raises
``BinaryUnreadable``: the run stops unacknowledged, and the next one streams
as text.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from .outbox import (
    REQUIRED_COLUMNS, CheckedRows, EventRow, OutboxSchemaError, Rejected, RowRejected, SharedText,
    dead_letter,
)
from ..pgoutput.messages import Relation, TupleData
from .events import DeadLetter

INT2, INT4, INT8, TEXT, NAME, BPCHAR, VARCHAR, JSON, JSONB, UUID, TIMESTAMP, TIMESTAMPTZ = (
    21, 23, 20, 25, 19, 1042, 1043, 114, 3802, 2950, 1114, 1184,
)
_INTEGERS: Final = {INT2: 2, INT4: 4, INT8: 8}
_TEXTS: Final = frozenset({TEXT, NAME, BPCHAR, VARCHAR, JSON})
_PG_EPOCH_IN_UNIX_MICROS: Final = 946_684_800_000_000
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=timezone.utc)
_INT32: Final = (-(2**31), 2**31 - 1)
# Microseconds from 2000-01-01 of the first and last instants a Python datetime holds (years 1 to 9999).
_PYTHON_RANGE: Final = (-63_082_281_600_000_000, 252_455_615_999_999_999)
_JSONB_VERSION: Final = 1

# The types each required column may have, as PostgreSQL sends them in binary.
READABLE: Final[Mapping[str, frozenset[int]]] = {
    "id": frozenset(_INTEGERS),
    "unique_id": _TEXTS | {UUID},
    "event_type": _TEXTS,
    "occurred_at": frozenset({TIMESTAMPTZ, TIMESTAMP}),
    "environment": _TEXTS,
    "payload": _TEXTS | {JSONB},
    "metadata_version": frozenset(_INTEGERS),
}


class BinaryUnreadable(OutboxSchemaError):
    """A required column's type cannot be read in binary: stream as text instead."""


def binary_readable(types: Mapping[str, int]) -> str | None:
    """None when every required column (name -> type OID) can be read in binary, else why not."""
    for column in REQUIRED_COLUMNS:
        oid = types.get(column)
        if oid is not None and oid not in READABLE[column]:
            return f"column {column} has type oid {oid}, which cdc reads only as text"
    return None


def as_text(oid: int, value: bytes) -> str:
    """One binary value as PostgreSQL would print it (for dead letters)."""
    if oid in _INTEGERS and len(value) == _INTEGERS[oid]:
        return str(int.from_bytes(value, "big", signed=True))
    if oid in (TIMESTAMPTZ, TIMESTAMP) and len(value) == 8:
        micros = int.from_bytes(value, "big", signed=True)
        if micros in (2**63 - 1, -(2**63)):
            return "infinity" if micros > 0 else "-infinity"
        if not _PYTHON_RANGE[0] <= micros <= _PYTHON_RANGE[1]:
            return f"{'BC' if micros < 0 else 'after 9999'}: {micros} microseconds from 2000-01-01"
        moment = _PG_EPOCH + timedelta(microseconds=micros)
        # As the walsender prints it (TimeZone UTC, DateStyle ISO): no trailing zeros, zone "+00".
        text = moment.strftime("%Y-%m-%d %H:%M:%S")
        if moment.microsecond:
            text += f".{moment.microsecond:06d}".rstrip("0")
        return text + "+00" if oid == TIMESTAMPTZ else text
    if oid == JSONB and value[:1] == b"\x01":
        value = value[1:]
    elif oid == UUID and len(value) == 16:
        return str(uuid.UUID(bytes=value))
    return value.decode("utf-8", "backslashreplace")


class BinaryRowConverter(CheckedRows):
    """Turns binary Insert tuples of one outbox relation into the same event rows as ``RowConverter``."""

    def __init__(self, relation: Relation, *, bounds: tuple[datetime, datetime], max_payload_bytes: int) -> None:
        super().__init__(relation, bounds=bounds, max_payload_bytes=max_payload_bytes)
        self.oids: Final = tuple(column.type_oid for column in relation.columns)
        types = dict(zip(self.names, self.oids))
        why = binary_readable(types)
        if why is not None:
            raise BinaryUnreadable(f"outbox table {self.relation_name}: {why}")
        shared = SharedText()
        self._shared: Final = shared.text
        # The usual outbox (migrations/0001_outbox.sql) in one go; other types the careful way.
        self._fast: Final = (
            types["occurred_at"] == TIMESTAMPTZ and types["payload"] == JSONB and types["unique_id"] != UUID
        )
        if self._fast:  # the compiled converter reads that outbox only
            self._compile(shared.strings, binary=True)

    def _convert_many(self, tuples: Sequence[TupleData], first_seq: int) -> tuple[list[EventRow], list[Rejected]]:
        """``convert_many`` in pure Python: the reference the compiled converter must match."""
        i_id, i_uid, i_type, i_at, i_env, i_payload, i_version = self._index
        low, high, max_payload, width, shared = self._min, self._max, self._max_payload, self._width, self._shared
        fast, from_bytes, epoch, int32 = self._fast, int.from_bytes, _PG_EPOCH_IN_UNIX_MICROS, _INT32
        rows: list[EventRow] = []
        rejected: list[Rejected] = []
        for seq, values in enumerate(tuples, first_seq):
            row: EventRow | None = None
            if fast:
                try:
                    at, payload = values[i_at], values[i_payload]
                    micros = from_bytes(at, "big", signed=True) + epoch  # type: ignore[arg-type]
                    version = from_bytes(values[i_version], "big", signed=True)  # type: ignore[arg-type]
                    row = (
                        values[i_uid], shared(values[i_type]), micros,  # type: ignore[arg-type]
                        shared(values[i_env]), payload[1:], version,  # type: ignore[arg-type,index]
                        from_bytes(values[i_id], "big", signed=True), seq,  # type: ignore[arg-type]
                    )
                    if (
                        not row[0] or len(at) != 8 or payload[0] != _JSONB_VERSION  # type: ignore[arg-type,index]
                        or len(row[4]) > max_payload or not low <= micros <= high or len(values) != width
                        or not int32[0] <= version <= int32[1]
                    ):
                        row = None
                except (AttributeError, TypeError, ValueError, IndexError):  # a NULL or unsent text: the careful way
                    row = None
            if row is None:
                try:
                    row = self._checked_convert(values, seq)
                except RowRejected as exc:
                    rejected.append((seq, values, str(exc)))
                    continue
            rows.append(row)
        return rows, rejected

    def _occurred(self, values: TupleData, index: int) -> int:
        raw_at = self._value(values, index)
        if self.oids[index] != TIMESTAMPTZ:
            raise RowRejected(f"occurred_at {as_text(self.oids[index], raw_at)!r} has no time zone: "
                              "make the column timestamptz")
        if len(raw_at) != 8:
            raise RowRejected(f"occurred_at is {len(raw_at)} bytes, not a binary timestamptz")
        micros = int.from_bytes(raw_at, "big", signed=True)
        if micros in (2**63 - 1, -(2**63)) or not _PYTHON_RANGE[0] <= micros <= _PYTHON_RANGE[1]:
            # As text mode says of values it cannot parse (infinity, BC dates, years past 9999).
            raise RowRejected(f"occurred_at {as_text(TIMESTAMPTZ, raw_at)!r} is not a timestamp ClickHouse can store")
        return micros + _PG_EPOCH_IN_UNIX_MICROS

    def _occurred_text(self, values: TupleData, index: int) -> str:
        return as_text(TIMESTAMPTZ, self._value(values, index))

    def _value(self, values: TupleData, index: int) -> bytes:
        value = values[index]
        if type(value) is bytes:
            return value
        if value is None:
            raise RowRejected(f"{self.names[index]} is NULL")
        raise RowRejected(f"{self.names[index]} was not sent (unchanged TOAST value)")

    def _text(self, values: TupleData, index: int) -> str:
        raw = self._value(values, index)
        oid = self.oids[index]
        if oid == JSONB:
            if raw[:1] != b"\x01":
                raise RowRejected(f"{self.names[index]} is not jsonb of format version 1")
            raw = raw[1:]
        elif oid == UUID:
            return as_text(oid, raw)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise RowRejected(f"{self.names[index]} is not valid UTF-8") from None

    def _int(self, values: TupleData, index: int) -> int:
        raw = self._value(values, index)
        if len(raw) != _INTEGERS[self.oids[index]]:
            raise RowRejected(f"{self.names[index]} is {len(raw)} bytes, not a binary integer")
        return int.from_bytes(raw, "big", signed=True)

    def dead_letter(self, values: TupleData, commit_lsn: int, seq: int, commit_time: int, reason: str) -> DeadLetter:
        readable: list[Any] = [
            value if type(value) is not bytes else as_text(oid, value).encode()
            for oid, value in zip(self.oids, values)
        ]
        return dead_letter(self.relation_name, self.names, tuple(readable), commit_lsn, seq, commit_time, reason)

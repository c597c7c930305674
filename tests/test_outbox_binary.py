"""Outbox rows in pgoutput's binary format read into the same events as in text (no servers; bytes as sent).

Each test runs on both paths (tests/implementations.py): the compiled accelerator converts text rows only,
and a binary outbox's rows go through BinaryRowConverter's Python on either path, with the same events."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.core.outbox import REQUIRED_COLUMNS, RowConverter
from cdc.core.outbox_binary import (
    INT4, INT8, JSONB, TEXT, TIMESTAMP, TIMESTAMPTZ, UUID, BinaryRowConverter, BinaryUnreadable, as_text,
    binary_readable,
)
from cdc.pgoutput.messages import Column, Relation, TupleData
from implementations import implementation  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("implementation")

UTC = timezone.utc
BOUNDS = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2105, 12, 31, 23, 59, 59, tzinfo=UTC))
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
TYPES = {"id": INT8, "unique_id": TEXT, "event_type": TEXT, "occurred_at": TIMESTAMPTZ, "environment": TEXT,
         "payload": JSONB, "metadata_version": INT4, "created_at": TIMESTAMPTZ}
NAMES = (*REQUIRED_COLUMNS, "created_at")


def relation(**types: int) -> Relation:
    merged = {**TYPES, **types}
    return Relation(None, 1, "public", "outbox", ord("d"), tuple(Column(0, n, merged[n], -1) for n in NAMES))


def ts_binary(moment: datetime) -> bytes:
    return struct.pack("!q", (moment - PG_EPOCH) // timedelta(microseconds=1))


def binary_row(outbox_id: int, uid: str, at: datetime, payload: str, version: int, *, version_size: int = 4,
               event_type: str = "user.created") -> TupleData:
    return (struct.pack("!q", outbox_id), uid.encode(), event_type.encode(), ts_binary(at), b"prod",
            b"\x01" + payload.encode(), version.to_bytes(version_size, "big", signed=True), ts_binary(at))


def text_row(outbox_id: int, uid: str, at: datetime, payload: str, version: int,
             event_type: str = "user.created") -> TupleData:
    # As the walsender prints them with TimeZone=UTC, DateStyle=ISO.
    at_text = at.astimezone(UTC).isoformat(sep=" ").replace("+00:00", "+00")
    return (str(outbox_id).encode(), uid.encode(), event_type.encode(), at_text.encode(), b"prod",
            payload.encode(), str(version).encode(), at_text.encode())


def converters() -> tuple[RowConverter, BinaryRowConverter]:
    text_relation = Relation(None, 1, "public", "outbox", ord("d"), tuple(Column(0, n, 25, -1) for n in NAMES))
    return (RowConverter(text_relation, bounds=BOUNDS, max_payload_bytes=100),
            BinaryRowConverter(relation(), bounds=BOUNDS, max_payload_bytes=100))


# Two rows as PostgreSQL 15 and 18 sent them with binary 'true' (id, text, timestamptz, jsonb, int4, int8, uuid).
CAPTURED_RELATION = Relation(None, 1, "public", "bt", ord("d"), tuple(
    Column(0, n, oid, -1) for n, oid in
    (("id", INT8), ("u", TEXT), ("ts", TIMESTAMPTZ), ("j", JSONB), ("v", INT4), ("vb", INT8), ("uu", UUID))))
CAPTURED = (
    (b"\x00\x00\x00\x00\x00\x00\x00\x01", b"x", b"\x00\x02\xb0\xec\x85\x17\xd5\x80", b'\x01{"a": [1, 2]}',
     b"\x00\x00\x00\x07", b"\x00\x00\x00\x01*\x05\xf2\x00", b"U\x0e\x84\x00\xe2\x9bA\xd4\xa7\x16DfUD\x00\x00"),
    (b"\x00\x00\x00\x00\x00\x00\x00\x02", b"y", b"\x7f\xff\xff\xff\xff\xff\xff\xff", b"\x01{}", b"\xff\xff\xff\xff",
     b"\xff\xff\xff\xff\xff\xff\xff\xfe", None),
)


def test_captured_binary_values_print_as_postgresql_prints_them() -> None:
    oids = [c.type_oid for c in CAPTURED_RELATION.columns]
    first = [as_text(oid, value) for oid, value in zip(oids, CAPTURED[0]) if value is not None]
    assert first == ["1", "x", "2024-01-02 03:04:05.123456+00", '{"a": [1, 2]}', "7", "5000000000",
                     "550e8400-e29b-41d4-a716-446655440000"]
    assert [as_text(oid, v) for oid, v in zip(oids, CAPTURED[1]) if v is not None][2:6] == [
        "infinity", "{}", "-1", "-2"]


@given(
    st.integers(1, 2**62), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2105, 12, 31), timezones=st.just(UTC)),
    st.dictionaries(st.text(max_size=5), st.integers(-(2**53), 2**53), max_size=3), st.integers(-(2**31), 2**31 - 1),
)
def test_binary_rows_become_exactly_the_events_their_text_form_does(
    outbox_id: int, uid: str, at: datetime, payload: dict[str, int], version: int
) -> None:
    text, binary = converters()
    body = orjson.dumps(payload).decode()
    # Twice: the compiled text converter hands a run's first event type to the Python, and takes the second row.
    from_text = text.convert_many([text_row(outbox_id, uid, at, body, version)] * 2, 3)
    from_binary = binary.convert_many([binary_row(outbox_id, uid, at, body, version)] * 2, 3)
    assert from_binary == from_text
    assert len(from_binary[0]) == 2, "a valid row is not rejected"


@pytest.mark.parametrize(("values", "reason"), [
    (binary_row(1, "", PG_EPOCH, "{}", 1), "unique_id is empty"),
    (binary_row(1, "u", PG_EPOCH, '{"x": "' + "y" * 200 + '"}', 1), "payload is 209 bytes, over the limit of 100"),
    (binary_row(1, "u", PG_EPOCH, "{}", 5_000_000_000, version_size=8),
     "metadata_version 5000000000 is outside ClickHouse's Int32 range"),
    (binary_row(1, "u", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "{}", 1),
     "occurred_at 1969-12-31 23:59:59+00 is outside what ClickHouse can store"),
])
def test_bad_binary_rows_are_rejected_with_the_text_modes_reason(values: TupleData, reason: str) -> None:
    types = {"metadata_version": INT8} if len(values[6] or b"") == 8 else {}
    converter = BinaryRowConverter(relation(**types), bounds=BOUNDS, max_payload_bytes=100)
    rows, rejected = converter.convert_many([values], 0)
    assert rows == [] and len(rejected) == 1 and rejected[0][2].startswith(reason)


def test_infinity_and_null_are_rejected_and_dead_lettered_readably() -> None:
    converter = BinaryRowConverter(relation(), bounds=BOUNDS, max_payload_bytes=100)
    infinite = binary_row(7, "u", PG_EPOCH, '{"k": 1}', 1)[:3] + (b"\x7f" + b"\xff" * 7,) + binary_row(
        7, "u", PG_EPOCH, '{"k": 1}', 1)[4:]
    missing = (None,) + binary_row(8, "v", PG_EPOCH, "{}", 1)[1:]
    rows, rejected = converter.convert_many([infinite, missing], 0)
    assert rows == []
    assert [r[2] for r in rejected] == [
        "occurred_at 'infinity' is not a timestamp ClickHouse can store", "id is NULL"]
    letter = converter.dead_letter(rejected[0][1], 99, 0, 0, rejected[0][2])
    row = orjson.loads(letter.row_json)
    assert row["id"] == "7" and row["occurred_at"] == "infinity" and row["payload"] == '{"k": 1}'


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_a_null_in_any_required_column_is_rejected_not_raised(column: str) -> None:
    converter = BinaryRowConverter(relation(), bounds=BOUNDS, max_payload_bytes=100)
    at = NAMES.index(column)
    good = binary_row(1, "u", PG_EPOCH, "{}", 1)
    rows, rejected = converter.convert_many([good[:at] + (None,) + good[at + 1:], good], 0)
    assert len(rows) == 1 and rows[0][-1] == 1
    assert [(seq, reason) for seq, _, reason in rejected] == [(0, f"{column} is NULL")]


def test_a_timestamp_without_time_zone_is_rejected_as_in_text_mode() -> None:
    converter = BinaryRowConverter(relation(occurred_at=TIMESTAMP), bounds=BOUNDS, max_payload_bytes=100)
    _, rejected = converter.convert_many([binary_row(1, "u", PG_EPOCH, "{}", 1)], 0)
    assert rejected[0][2] == "occurred_at '2000-01-01 00:00:00' has no time zone: make the column timestamptz"


def test_uuid_unique_ids_arrive_in_their_text_form() -> None:
    converter = BinaryRowConverter(relation(unique_id=UUID), bounds=BOUNDS, max_payload_bytes=100)
    values = (struct.pack("!q", 1), CAPTURED[0][6], b"t", ts_binary(PG_EPOCH), b"e", b"\x01{}", b"\x00\x00\x00\x01",
              ts_binary(PG_EPOCH))
    rows, _ = converter.convert_many([values], 0)
    assert rows[0][0] == b"550e8400-e29b-41d4-a716-446655440000"


def test_a_column_type_binary_mode_cannot_read_is_refused_before_and_during_the_stream() -> None:
    assert binary_readable({"id": INT8, "payload": JSONB}) is None
    assert binary_readable({"payload": 17}) == "column payload has type oid 17, which cdc reads only as text"
    with pytest.raises(BinaryUnreadable, match="payload has type oid 17"):
        BinaryRowConverter(relation(payload=17), bounds=BOUNDS, max_payload_bytes=100)


def test_timestamps_before_year_one_are_not_timestamps_as_in_text_mode() -> None:
    converter = BinaryRowConverter(relation(), bounds=BOUNDS, max_payload_bytes=100)
    row = binary_row(1, "u", PG_EPOCH, "{}", 1)
    before_christ = row[:3] + (struct.pack("!q", -64_464_508_800_000_000),) + row[4:]
    _, rejected = converter.convert_many([before_christ], 0)
    assert rejected[0][2].endswith("is not a timestamp ClickHouse can store")

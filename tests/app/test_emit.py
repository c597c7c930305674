"""cdc.emit against real PostgreSQL: the event commits and rolls back with the caller's transaction."""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from servers import PgServer
from servers.postgres import create_database, drop_database
from support import Target, checked

import cdc
from cdc.app.emit import Event


@pytest.fixture(scope="module")
def _outbox_database(pg_server: PgServer) -> Iterator[str]:
    # One database with the outbox `cdc migrate` creates, for the whole module:
    # migrating is a subprocess, far slower than any of these tests.
    name = f"t_{secrets.token_hex(6)}"
    create_database(pg_server, name)
    checked(Target(pg_server.dsn(name), "").cdc("migrate"))
    yield pg_server.dsn(name)
    drop_database(pg_server, name)


@pytest.fixture
def outbox_dsn(_outbox_database: str) -> str:
    """The migrated database, with an empty outbox."""
    with psycopg.connect(_outbox_database, autocommit=True) as c:
        c.execute("TRUNCATE outbox")
    return _outbox_database


@pytest.fixture
def conn(outbox_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(outbox_dsn, autocommit=True) as c:
        yield c


def _rows(dsn: str, unique_id: str | None = None) -> list[tuple[Any, ...]]:
    # From a separate connection: only what is committed counts.
    with psycopg.connect(dsn, autocommit=True) as other:
        return other.execute(
            "SELECT unique_id, event_type, environment, payload, metadata_version, occurred_at FROM outbox"
            " WHERE %s::text IS NULL OR unique_id = %s ORDER BY id",
            (unique_id, unique_id),
        ).fetchall()


def test_a_committed_event_is_one_outbox_row_with_its_values(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    at = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    with conn.transaction():
        uid = cdc.emit(conn, "order_placed", {"order_id": 7, "total": 9.5},
                       environment="staging", occurred_at=at, metadata_version=3)
    assert _rows(outbox_dsn) == [(uid, "order_placed", "staging", {"order_id": 7, "total": 9.5}, 3, at)]


def test_a_generated_unique_id_is_a_fresh_uuid4(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        first = cdc.emit(conn, "a", {})
        second = cdc.emit(conn, "a", {})
    assert uuid.UUID(first).version == 4 and first != second


def test_a_rolled_back_transaction_leaves_no_event(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TABLE orders (id int)")
        uid = cdc.emit(conn, "order_placed", {"order_id": 1})
        assert len(_rows(outbox_dsn, uid)) == 0  # not visible before commit either
    assert _rows(outbox_dsn, uid) == []


def test_an_exception_in_the_transaction_takes_the_event_with_it(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    with pytest.raises(ZeroDivisionError), conn.transaction():
        uid = cdc.emit(conn, "order_placed", {})
        1 / 0  # noqa: B018
    assert _rows(outbox_dsn, uid) == []


def test_a_retry_with_the_same_unique_id_is_a_second_outbox_row(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    uid = "order-7-placed"
    for _attempt in range(2):
        with conn.transaction():
            assert cdc.emit(conn, "order_placed", {"order_id": 7}, unique_id=uid) == uid
    # Deduplication is downstream's job (cdc run): the outbox keeps both.
    assert [r[0] for r in _rows(outbox_dsn, uid)] == [uid, uid]


def test_an_autocommit_connection_outside_a_transaction_is_refused(
    conn: psycopg.Connection[Any], outbox_dsn: str
) -> None:
    with pytest.raises(cdc.OutsideTransactionError, match=r"conn\.transaction\(\)"):
        cdc.emit(conn, "lonely", {}, unique_id="refused")
    assert _rows(outbox_dsn, "refused") == []


def test_allow_autocommit_writes_a_standalone_event_at_once(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    uid = cdc.emit(conn, "user_logged_in", {"user": 1}, allow_autocommit=True)
    assert len(_rows(outbox_dsn, uid)) == 1


def test_without_autocommit_the_event_joins_the_implicit_transaction(outbox_dsn: str) -> None:
    with psycopg.connect(outbox_dsn) as c:
        kept = cdc.emit(c, "kept", {})
        assert _rows(outbox_dsn, kept) == []  # emit itself never commits
        c.commit()
        dropped = cdc.emit(c, "dropped", {})
        c.rollback()
    assert len(_rows(outbox_dsn, kept)) == 1
    assert _rows(outbox_dsn, dropped) == []


def test_occurred_at_defaults_to_the_transaction_start(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    with conn.transaction():
        started = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        uid = cdc.emit(conn, "a", {})
    assert _rows(outbox_dsn, uid)[0][5] == started


def test_environment_defaults_to_cdc_environment(
    conn: psycopg.Connection[Any], outbox_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDC_ENVIRONMENT", raising=False)
    with conn.transaction():
        unset = cdc.emit(conn, "a", {})
    monkeypatch.setenv("CDC_ENVIRONMENT", "production")
    with conn.transaction():
        from_env = cdc.emit(conn, "a", {})
        explicit = cdc.emit(conn, "a", {}, environment="")
    assert [_rows(outbox_dsn, u)[0][2] for u in (unset, from_env, explicit)] == ["", "production", ""]


def test_payload_values_orjson_knows_are_stored_as_json(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    ref = uuid.UUID("12345678-1234-5678-1234-567812345678")
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with conn.transaction():
        uid = cdc.emit(conn, "a", {"ref": ref, "at": at, "nested": {"list": [1, "é", None]}})
    assert _rows(outbox_dsn, uid)[0][3] == {
        "ref": str(ref), "at": "2024-01-02T03:04:05+00:00", "nested": {"list": [1, "é", None]}
    }


BAD_EVENTS: list[tuple[dict[str, Any], str]] = [
    ({"event_type": ""}, "event_type must not be empty"),
    ({"event_type": "   "}, "event_type must not be empty"),
    ({"event_type": None}, "event_type must be a str"),
    ({"event_type": "a\x00b"}, "NUL"),
    ({"payload": '{"already": "json"}'}, "not its JSON text"),
    ({"payload": [1, 2]}, "must be a dict"),
    ({"payload": {"when": object()}}, "not JSON-serialisable"),
    ({"payload": {1: "int key"}}, "not JSON-serialisable"),
    ({"payload": {"text": "nul \x00 inside"}}, r"\\u0000"),
    ({"unique_id": ""}, "unique_id must not be empty"),
    ({"unique_id": 42}, "unique_id must be a str"),
    ({"environment": 3}, "environment must be a str"),
    ({"occurred_at": datetime(2024, 1, 1)}, "timezone-aware"),
    ({"occurred_at": "2024-01-01"}, "must be a datetime"),
    ({"metadata_version": 0}, "between 1 and"),
    ({"metadata_version": 2**31}, "between 1 and"),
    ({"metadata_version": True}, "must be an int"),
]


@pytest.mark.parametrize(("change", "message"), BAD_EVENTS, ids=[m for _, m in BAD_EVENTS])
def test_a_bad_event_is_refused_before_it_can_break_the_transaction(
    conn: psycopg.Connection[Any], outbox_dsn: str, change: dict[str, Any], message: str
) -> None:
    event: dict[str, Any] = {"event_type": "ok", "payload": {"a": 1}} | change
    with conn.transaction():
        with pytest.raises(cdc.EmitError, match=message):
            cdc.emit(conn, event.pop("event_type"), event.pop("payload"), **event)
        # Nothing reached the server: the transaction is still good to commit.
        uid = cdc.emit(conn, "after", {})
    assert len(_rows(outbox_dsn, uid)) == 1
    assert len(_rows(outbox_dsn)) == 1


def test_schema_and_table_are_quoted_as_identifiers(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    conn.execute('CREATE SCHEMA "Odd Schema"')
    conn.execute('CREATE TABLE "Odd Schema"."out""box" (LIKE public.outbox INCLUDING DEFAULTS)')
    with conn.transaction():
        cdc.emit(conn, "a", {}, schema="Odd Schema", table='out"box')
    assert conn.execute('SELECT count(*) FROM "Odd Schema"."out""box"').fetchone() == (1,)
    with pytest.raises(psycopg.errors.UndefinedTable), conn.transaction():
        cdc.emit(conn, "a", {}, table="outbox; DROP TABLE outbox")
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_emit_many_writes_in_order_and_all_or_nothing(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    events = [Event("a", {"n": n}, unique_id=f"id-{n}") for n in range(5)]
    events.insert(2, Event("b", {"n": 99}, occurred_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    with conn.transaction():
        ids = cdc.emit_many(conn, events, environment="test")
    assert [r[0] for r in _rows(outbox_dsn)] == ids
    assert ids[:2] == ["id-0", "id-1"] and ids[3:] == ["id-2", "id-3", "id-4"]
    assert _rows(outbox_dsn, ids[2])[0][5] == datetime(2020, 1, 1, tzinfo=timezone.utc)

    bad = [Event("a", {}, unique_id="never"), Event("", {})]
    with conn.transaction(), pytest.raises(cdc.EmitError):
        cdc.emit_many(conn, bad)
    assert _rows(outbox_dsn, "never") == []


def test_emit_refuses_what_is_not_a_psycopg_connection(outbox_dsn: str) -> None:
    with psycopg.connect(outbox_dsn) as c, c.cursor() as cur, pytest.raises(TypeError, match="psycopg.Connection"):
        cdc.emit(cur, "a", {})  # type: ignore[arg-type]


def test_import_cdc_does_not_import_psycopg_until_emit_is_used() -> None:
    probe = (
        "import sys, cdc\n"
        "assert 'psycopg' not in sys.modules and 'orjson' not in sys.modules, 'import cdc is not cheap'\n"
        "cdc.emit\n"
        "assert 'psycopg' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_occurred_at_in_another_time_zone_keeps_its_instant(conn: psycopg.Connection[Any], outbox_dsn: str) -> None:
    at = datetime.now(timezone(timedelta(hours=2))) - timedelta(minutes=10)
    with conn.transaction():
        uid = cdc.emit(conn, "a", {}, occurred_at=at)
    assert _rows(outbox_dsn, uid)[0][5] == at

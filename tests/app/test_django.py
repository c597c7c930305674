"""The Django integration against real PostgreSQL: the app's migration, emit() in atomic blocks, the model."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import django
import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connections, transaction
from psycopg.conninfo import conninfo_to_dict
from servers import PgServer
from servers.postgres import create_database, drop_database
from support import Target, checked

# The test process configures Django once; each test points the "default"
# alias at its own fresh database, the way Django's own test runner switches
# to the test database.
if not settings.configured:
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "postgres"},
            "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        INSTALLED_APPS=["cdc.contrib.django"],
        USE_TZ=True,
    )
    django.setup()

from cdc.contrib.django import EmitError, Event, OutsideTransactionError, emit, emit_many
from cdc.contrib.django.models import OutboxEvent, OutboxIsAppendOnly


def _django_database(dsn: str) -> dict[str, Any]:
    parts = conninfo_to_dict(dsn)
    return {"NAME": parts["dbname"], "USER": parts.get("user", ""), "PASSWORD": parts.get("password", ""),
            "HOST": parts.get("host", ""), "PORT": str(parts.get("port", ""))}


@pytest.fixture
def db(pg_dsn: str) -> Iterator[str]:
    """Django's default database is this test's fresh PostgreSQL database (nothing migrated yet)."""
    connection = connections["default"]
    connection.close()
    connection.settings_dict.update(_django_database(pg_dsn))
    yield pg_dsn
    connections.close_all()


def _migrate(*args: str) -> None:
    call_command("migrate", "cdc", *args, verbosity=0)


def _committed(dsn: str, unique_id: str | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as other:
        return other.execute(
            "SELECT unique_id, event_type, environment, payload FROM outbox WHERE %s::text IS NULL OR unique_id = %s"
            " ORDER BY id", (unique_id, unique_id),
        ).fetchall()


def _outbox_shape(dsn: str) -> tuple[object, ...]:
    """What makes an outbox: columns with types, nullability and defaults, key, partitioning, partitions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'outbox' ORDER BY ordinal_position"
        ).fetchall()
        key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.outbox'::regclass"
        ).fetchall()
        partitioning = conn.execute("SELECT pg_get_partkeydef('public.outbox'::regclass)").fetchall()
        partitions = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.outbox'::regclass"
        ).fetchall()
        ledger = conn.execute("SELECT table_name, migration FROM public.cdc_migrations ORDER BY 2").fetchall()
    return columns, key, partitioning, partitions, ledger


@pytest.fixture
def other_database(pg_server: PgServer) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    create_database(pg_server, name)
    yield pg_server.dsn(name)
    drop_database(pg_server, name)


@pytest.mark.single_slot("compares Django's outbox with an unsharded migrate's: sharding adds shard_hash")
def test_the_django_migration_creates_the_outbox_cdc_migrate_creates(db: str, other_database: str) -> None:
    _migrate()
    checked(Target(other_database, "").cdc("migrate"))
    django_made = _outbox_shape(db)
    assert django_made[0], "no outbox table"
    assert django_made == _outbox_shape(other_database)


@pytest.mark.single_slot("expects the one publication and slot in migrate's report")
def test_cdc_migrate_after_the_django_migration_only_adds_publication_and_slot(db: str) -> None:
    _migrate()
    result = checked(Target(db, "").cdc("migrate", "--json"))
    assert '"migrations_applied":[]' in result.stdout
    assert '"publication_created":true' in result.stdout and '"slot_created":true' in result.stdout
    _migrate()  # and Django again: nothing to do, nothing fails


def test_the_django_migration_after_cdc_migrate_keeps_the_outbox_and_its_rows(db: str) -> None:
    checked(Target(db, "").cdc("migrate"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO outbox (unique_id, event_type) VALUES ('before-django', 'a')")
    _migrate()
    assert [r[0] for r in _committed(db)] == ["before-django"]
    with psycopg.connect(db, autocommit=True) as conn:
        recorded = conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'cdc'").fetchone()
    assert recorded == (1,)


def test_migrating_back_to_zero_drops_the_outbox_and_cdc_migrate_recreates_it(db: str) -> None:
    _migrate()
    _migrate("zero")
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.outbox')").fetchone() == (None,)
    result = checked(Target(db, "").cdc("migrate", "--json"))
    assert '"migrations_applied":["0001_outbox.sql"]' in result.stdout


def test_emit_inside_atomic_commits_with_the_business_data(db: str) -> None:
    _migrate()
    with transaction.atomic():
        uid = emit("order_placed", {"order_id": 7}, environment="production")
        assert _committed(db, uid) == []  # not before the atomic block commits
    assert _committed(db, uid) == [(uid, "order_placed", "production", {"order_id": 7})]
    event = OutboxEvent.objects.get(unique_id=uid)
    assert (event.event_type, event.payload, event.metadata_version) == ("order_placed", {"order_id": 7}, 1)
    assert event.occurred_at.tzinfo is not None


def test_an_exception_in_the_atomic_block_rolls_the_event_back(db: str) -> None:
    _migrate()
    with pytest.raises(RuntimeError), transaction.atomic():
        uid = emit("order_placed", {"order_id": 8})
        raise RuntimeError("payment failed")
    assert _committed(db, uid) == []
    assert not OutboxEvent.objects.filter(unique_id=uid).exists()


def test_a_rolled_back_savepoint_takes_only_its_own_event(db: str) -> None:
    _migrate()
    with transaction.atomic():
        kept = emit("a", {})
        with pytest.raises(ValueError), transaction.atomic():
            dropped = emit("b", {})
            raise ValueError
    assert [r[0] for r in _committed(db)] == [kept]
    assert dropped != kept


def test_emit_outside_atomic_is_refused_unless_autocommit_is_accepted(db: str) -> None:
    _migrate()
    with pytest.raises(OutsideTransactionError, match=r"transaction\.atomic\(\)"):
        emit("lonely", {}, unique_id="refused")
    assert _committed(db, "refused") == []
    uid = emit("user_logged_in", {}, allow_autocommit=True)
    assert len(_committed(db, uid)) == 1


def test_a_retry_is_a_second_row_with_the_same_unique_id(db: str) -> None:
    _migrate()
    for _ in range(2):
        with transaction.atomic():
            emit("order_placed", {"order_id": 9}, unique_id="order-9")
    assert OutboxEvent.objects.filter(unique_id="order-9").count() == 2


def test_emit_many_writes_in_order_and_a_bad_value_writes_nothing(db: str) -> None:
    _migrate()
    with transaction.atomic():
        ids = emit_many([Event("a", {"n": 1}), Event("b", {"n": 2}, unique_id="second")])
        with pytest.raises(EmitError, match="not its JSON text"):
            emit("a", '{"n": 3}')  # type: ignore[arg-type]
    assert [r[0] for r in _committed(db)] == ids and ids[1] == "second"


def test_environment_comes_from_the_django_setting(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _migrate()
    monkeypatch.setenv("CDC_ENVIRONMENT", "from-variable")
    monkeypatch.setattr(settings, "CDC_ENVIRONMENT", "from-settings", raising=False)
    with transaction.atomic():
        uid = emit("a", {})
    assert _committed(db, uid)[0][2] == "from-settings"


def test_the_model_refuses_to_change_or_delete_outbox_rows(db: str) -> None:
    _migrate()
    with transaction.atomic():
        uid = emit("a", {})
    event = OutboxEvent.objects.get(unique_id=uid)
    for attempt in (event.save, event.delete, OutboxEvent.objects.all().delete,
                    lambda: OutboxEvent.objects.filter(unique_id=uid).update(event_type="b")):
        with pytest.raises(OutboxIsAppendOnly, match="append-only"):
            attempt()
    assert _committed(db, uid)[0][1] == "a"


def test_a_database_that_is_not_postgresql_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="needs PostgreSQL"), transaction.atomic(using="sqlite"):
        emit("a", {}, using="sqlite")
    with pytest.raises(ImproperlyConfigured, match="needs PostgreSQL"):
        call_command("migrate", "cdc", database="sqlite", verbosity=0)


def test_the_model_and_the_migration_agree(db: str) -> None:
    # makemigrations --check exits non-zero if the model drifted from 0001.
    call_command("makemigrations", "cdc", "--check", "--dry-run", verbosity=0)


_CUSTOM_TABLE_APP = """
import os, django
from django.conf import settings
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", **DB}},
    INSTALLED_APPS=["cdc.contrib.django"], USE_TZ=True,
    CDC_OUTBOX_SCHEMA="events", CDC_OUTBOX_TABLE="app_outbox",
)
django.setup()
from django.core.management import call_command
from django.db import transaction
from cdc.contrib.django import emit
from cdc.contrib.django.models import OutboxEvent
call_command("migrate", verbosity=0)
with transaction.atomic():
    emit("a", {}, unique_id="custom")
print(OutboxEvent._meta.db_table, OutboxEvent.objects.get().unique_id)
"""


@pytest.mark.single_slot("migrates an outbox that already holds rows: sharding that is refused by design (tests/shards)")
def test_cdc_outbox_schema_and_table_settings_place_the_outbox(db: str) -> None:
    script = f"DB = {_django_database(db)!r}\n" + textwrap.dedent(_CUSTOM_TABLE_APP)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ['"events"."app_outbox"', "custom"]
    again = checked(Target(db, "").cdc("migrate", "--json", "--outbox-schema", "events", "--outbox-table", "app_outbox"))
    assert '"migrations_applied":[]' in again.stdout

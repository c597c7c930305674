"""``cdc migrate --shards N`` on real PostgreSQL 15 and 18 (and ClickHouse): column, publications, slots."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from servers import PgServer
from support import Target, checked, insert_events

from cdc.pgoutput import decode
from cdc.pgoutput.messages import Insert, Relation


@pytest.fixture
def t(pg_dsn: str, clickhouse_url: str) -> Target:
    return Target(pg_dsn, clickhouse_url)


def slots(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    return {str(name): str(plugin) for name, plugin in conn.execute(
        "SELECT slot_name, plugin FROM pg_replication_slots ORDER BY 1").fetchall()}


def row_filters(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str | None]:
    return {str(p): f for p, f in conn.execute(  # type: ignore[misc]
        "SELECT pubname, rowfilter FROM pg_publication_tables ORDER BY 1").fetchall()}


def test_migrate_with_four_shards_makes_the_column_four_filtered_publications_and_four_slots(t: Target) -> None:
    out = orjson.loads(checked(t.cdc("migrate", "--shards", "4", "--json")).stdout)
    assert out["shards"]["shards"] == 4 and out["shards"]["column_added"] is True
    assert sorted(out["shards"]["slots_created"]) == [f"cdc_outbox_{k}" for k in range(4)]
    with t.pg() as conn:
        assert slots(conn) == {f"cdc_outbox_{k}": "pgoutput" for k in range(4)}
        filters = row_filters(conn)
        assert set(filters) == {f"cdc_outbox_{k}" for k in range(4)}
        assert all(f is not None and "shard_hash" in f and f"= {k})" in f for k, f in enumerate(filters.values()))
        assert conn.execute(
            "SELECT shards, state FROM cdc_shard_generations WHERE slot = 'cdc_outbox'").fetchall() == [(4, "active")]
        kind = conn.execute(
            "SELECT attgenerated FROM pg_attribute WHERE attrelid = 'outbox'::regclass AND attname = 'shard_hash'"
        ).fetchone()
        assert kind == ("s",)
    columns = {(table, name) for table, name in t.ch().execute(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND name = 'stream'")}
    assert columns == {("events", "stream"), ("events_dead_letter", "stream"), ("events_cdc_progress", "stream"),
                       ("events_cdc_progress_mv", "stream")}


def test_each_committed_row_is_sent_by_exactly_the_slot_of_its_shard(t: Target) -> None:
    checked(t.cdc("migrate", "--shards", "4"))
    ids = [f"row-{i}" for i in range(120)]
    with t.pg() as conn:
        insert_events(conn, ids[:60])
        insert_events(conn, ids[60:])
        expected = {k: {str(u) for (u,) in conn.execute(
            "SELECT unique_id FROM outbox WHERE shard_hash %% 4 = %s", (k,)).fetchall()} for k in range(4)}
        seen: dict[int, list[str]] = {}
        for k in range(4):
            changes = conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
                "'proto_version', '1', 'publication_names', %s)", (f"cdc_outbox_{k}", f"cdc_outbox_{k}"),
            ).fetchall()
            seen[k] = sent_unique_ids([bytes(data) for (data,) in changes])
    assert all(expected[k] for k in range(4)), "120 ids should reach every one of 4 shards"
    for k in range(4):
        assert sorted(seen[k]) == sorted(expected[k])
    assert sorted(u for k in range(4) for u in seen[k]) == sorted(ids)


def sent_unique_ids(messages: list[bytes]) -> list[str]:
    column = None
    out = []
    for data in messages:
        message = decode(data)
        if isinstance(message, Relation):
            column = [c.name for c in message.columns].index("unique_id")
        elif isinstance(message, Insert):
            assert column is not None
            value = message.new[column]
            assert isinstance(value, (bytes, bytearray, memoryview))
            out.append(bytes(value).decode())
    return out


def test_shard_hash_has_the_same_value_on_every_postgresql_version(t: Target) -> None:
    checked(t.cdc("migrate", "--shards", "2"))
    with t.pg() as conn:
        insert_events(conn, ["a", "b", "hello", "550e8400-e29b-41d4-a716-446655440000"])
        got = dict(conn.execute("SELECT unique_id, shard_hash FROM outbox").fetchall())
    # Values PostgreSQL 15 and 18 both computed (hashtextextended: hash partitioning's own function).
    assert got == {"a": 3591986179850072241, "b": 7590309700003291040, "hello": 3449563369152288809,
                   "550e8400-e29b-41d4-a716-446655440000": 4425327482371494121}


def test_migrate_again_keeps_the_shards_and_another_count_is_sent_to_reshard(t: Target) -> None:
    checked(t.cdc("migrate", "--shards", "4"))
    again = orjson.loads(checked(t.cdc("migrate", "--json")).stdout)
    assert again["shards"] == {"shards": 4, "generation": 1, "column_added": False,
                               "publications_created": [], "slots_created": []}
    refused = t.cdc("migrate", "--shards", "8")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "cdc: error: the outbox is already split into 4 shards (slots cdc_outbox_*): "
        "change that under load with `cdc shards reshard 8`")


@pytest.mark.single_slot("starts from an unsharded outbox")
def test_an_outbox_streamed_by_one_slot_is_not_split_by_migrate(t: Target) -> None:
    checked(t.cdc("migrate"))
    refused = t.cdc("migrate", "--shards", "4")
    assert refused.returncode == 1
    assert "`cdc shards reshard 4`" in refused.stderr.splitlines()[-1]
    with t.pg() as conn:
        assert slots(conn) == {"cdc_outbox": "pgoutput"}


@pytest.mark.single_slot("starts from an unsharded outbox")
def test_rows_already_in_the_outbox_stop_the_split_and_nothing_is_left_behind(t: Target) -> None:
    checked(t.cdc("migrate", "--pg-dsn", t.pg_dsn))
    with t.pg() as conn:
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
        insert_events(conn, ["early-1", "early-2"])
    refused = t.cdc("migrate", "--shards", "4")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith("cdc: error: the outbox already holds rows that new slots")
    with t.pg() as conn:
        assert slots(conn) == {}
        assert set(row_filters(conn)) == {"cdc_outbox"}
        assert conn.execute("SELECT count(*) FROM cdc_shard_generations").fetchone() == (0,)


def test_one_shard_is_exactly_todays_layout_and_names(t: Target) -> None:
    out = orjson.loads(checked(t.cdc("migrate", "--shards", "1", "--json")).stdout)
    assert out["shards"] is None
    with t.pg() as conn:
        assert slots(conn) == {"cdc_outbox": "pgoutput"}
        assert row_filters(conn) == {"cdc_outbox": None}
        columns = [str(c) for (c,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'outbox'::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum").fetchall()]
        assert "shard_hash" not in columns and "unique_id" in columns
        tables = {str(n) for (n,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relname IN ('cdc_shard_generations', 'cdc_workers')").fetchall()}
        assert tables == set()
    ids = [f"one-{i}" for i in range(10)]
    with t.pg() as conn:
        insert_events(conn, ids)
    run = checked(t.cdc("run", "--until-lsn", "current"))
    assert "worker joined" not in run.stderr  # one slot: the plain pipeline, no worker group
    assert sorted(t.delivered_ids()) == sorted(ids)
    assert {s for (s,) in t.ch().execute("SELECT DISTINCT stream FROM events_cdc_progress")} == {0}


def failover_of(t: Target) -> dict[str, bool]:
    with t.pg() as conn:
        return {str(n): bool(f) for n, f in conn.execute(
            "SELECT slot_name, failover FROM pg_replication_slots ORDER BY 1").fetchall()}


def test_shard_slots_are_failover_slots_where_the_server_has_them_like_the_single_slot(
    t: Target, pg_server: PgServer,
) -> None:
    if pg_server.major < 17:
        refused = t.cdc("migrate", "--shards", "2", "--failover")
        assert refused.returncode == 1
        assert "failover slots need PostgreSQL 17" in refused.stderr.strip().splitlines()[-1]
        with t.pg() as conn:
            assert slots(conn) == {}
        out = orjson.loads(checked(t.cdc("migrate", "--shards", "2", "--json")).stdout)
        assert out["slot_failover"] is False
        return
    out = orjson.loads(checked(t.cdc("migrate", "--shards", "2", "--json")).stdout)
    assert out["slot_failover"] is True
    assert failover_of(t) == {"cdc_outbox_0": True, "cdc_outbox_1": True}
    # A reshard makes its slots the same way, and --no-failover opts out there too.
    checked(t.cdc("shards", "reshard", "3", "--no-failover", "--yes"))
    assert failover_of(t) == {f"cdc_outbox_g2_{k}": False for k in range(3)}
    checked(t.cdc("shards", "reshard", "2", "--yes"))
    assert failover_of(t) == {"cdc_outbox_g3_0": True, "cdc_outbox_g3_1": True}


def doctor_checks(t: Target) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in orjson.loads(t.cdc("doctor", "--json").stdout)["checks"]}


@pytest.mark.single_slot("builds its own sharded layout from an unsharded outbox")
def test_doctor_fails_a_shard_column_that_leaves_null_ids_unrouted_until_unique_id_is_not_null(t: Target) -> None:
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
        # The expression of outboxes sharded before a NULL unique_id was routed to shard 0.
        conn.execute("ALTER TABLE outbox ADD COLUMN shard_hash bigint GENERATED ALWAYS AS "
                     "(hashtextextended(unique_id, 0) & 9223372036854775807) STORED")
        conn.execute("ALTER TABLE outbox ALTER COLUMN unique_id DROP NOT NULL")
    checked(t.cdc("migrate", "--shards", "2"))
    check = doctor_checks(t)["shard column"]
    assert check["status"] == "FAIL" and "NULL unique_id" in check["detail"]
    assert check["fix"] == 'ALTER TABLE "public"."outbox" ALTER COLUMN unique_id SET NOT NULL;'
    with t.pg() as conn:
        conn.execute(check["fix"])
    assert doctor_checks(t)["shard column"]["status"] == "PASS"


def test_doctor_passes_the_shard_column_migrate_makes_even_where_unique_id_may_be_null(t: Target) -> None:
    checked(t.cdc("migrate", "--shards", "2"))
    with t.pg() as conn:
        conn.execute("ALTER TABLE outbox ALTER COLUMN unique_id DROP NOT NULL")
    check = doctor_checks(t)["shard column"]
    assert check["status"] == "PASS" and "coalesce" in check["detail"].lower(), check

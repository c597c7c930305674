"""``cdc outbox maintain`` (idempotent future partitions) and ``prune`` (never a partition ClickHouse may lack)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from admin_support import Cli, ok, refused
from support import Target, drop_slot_once_released, insert_events, stop, wait_until


def _partitions(t: Target) -> set[str]:
    with t.pg() as conn:
        return {r[0] for r in conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits "
                                           "WHERE inhparent = 'outbox'::regclass").fetchall()}


def _maintain(run: Cli, *args: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(ok(run("outbox", "maintain", "--json", *args)).stdout)["partitions"]  # type: ignore[no-any-return]


def test_maintain_creates_the_coming_days_once(migrated: Target, run: Cli) -> None:
    today = datetime.now(timezone.utc).date()
    first = _maintain(run, "--days-ahead", "3")
    assert [p["action"] for p in first] == ["created"] * 4
    assert [p["name"] for p in first] == [f"outbox_p{today + timedelta(days=d):%Y%m%d}" for d in range(4)]
    again = _maintain(run, "--days-ahead", "3")
    assert [p["action"] for p in again] == ["exists"] * 4
    assert _partitions(migrated) == {"outbox_default", *(p["name"] for p in first)}
    with migrated.pg() as conn:
        insert_events(conn, ["lands-in-today"])
        where = conn.execute("SELECT tableoid::regclass::text FROM outbox").fetchone()
    assert where == (first[0]["name"],)
    weekly = _maintain(run, "--days-ahead", "10", "--interval", "week")
    assert weekly[0]["action"] == "skipped" and "overlaps partition" in weekly[0]["note"]
    assert weekly[-1]["action"] == "created" and datetime.fromisoformat(weekly[-1]["from"]).weekday() == 0


def test_maintain_leaves_a_range_already_in_the_default_partition(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["already-in-default"])
    result = _maintain(run, "--days-ahead", "1")
    assert result[0]["action"] == "skipped" and "default partition outbox_default" in result[0]["note"]
    assert [p["action"] for p in result[1:]] == ["created"]
    assert "skipped" in ok(run("outbox", "maintain", "--days-ahead", "1")).stdout


def test_maintain_refuses_a_table_it_cannot_manage(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("CREATE TABLE plain_outbox (id bigint, created_at timestamptz)")
    refused(run("outbox", "maintain", "--outbox-table", "plain_outbox"), "is not partitioned by RANGE (created_at)")
    refused(run("outbox", "maintain", "--outbox-table", "x" * 60), "too long")
    refused(run("outbox", "prune", "--older-than", "7 days"), "is not an age", code=2)


def _old_partition(t: Target, day: str) -> str:
    name = f"outbox_p{day.replace('-', '')}"
    with t.pg() as conn:
        conn.execute(f"CREATE TABLE {name} PARTITION OF outbox FOR VALUES FROM ('{day}') TO "
                     f"('{day}'::date + 1)")
    return name


def _insert_old(t: Target, day: str, ids: list[str]) -> None:
    with t.pg() as conn:
        for uid in ids:
            conn.execute("INSERT INTO outbox (unique_id, event_type, payload, created_at) "
                         "VALUES (%s, 'old', '{}', %s::timestamptz + interval '10 hours')", (uid, day))


def _prune(run: Cli, *args: str) -> dict[str, dict]:  # type: ignore[type-arg]
    result = ok(run("outbox", "prune", "--older-than", "7d", "--json", *args))
    return {p["name"]: p for p in json.loads(result.stdout)["partitions"]}


@pytest.mark.single_slot("advances the one slot; tests/workers/test_sharded_admin.py prunes behind every shard's slot")
def test_prune_drops_only_delivered_partitions(migrated: Target, run: Cli) -> None:
    _maintain(run, "--days-ahead", "1")
    delivered, undelivered, empty = (_old_partition(migrated, d) for d in ("2001-01-01", "2001-01-02", "2001-01-03"))
    _insert_old(migrated, "2001-01-01", ["a1", "a2"])
    ok(run("run", "--until-lsn", "current"))
    _insert_old(migrated, "2001-01-02", ["b1", "b2"])

    # No `cdc run` acknowledges: nothing with rows may go, however old. An empty one may.
    first = _prune(run, "--wait", "0.5")
    assert set(first) == {delivered, undelivered, empty}
    assert first[empty]["action"] == "dropped"
    for name in (delivered, undelivered):
        assert first[name]["action"] == "kept" and "not yet" in first[name]["reason"], first[name]

    # b1, b2 are lost to the slot (as when it is advanced past them): acknowledged, yet not in ClickHouse.
    ok(run("slot", "advance", "--to-lsn", migrated.current_lsn(), "--yes"))
    proc = migrated.start("run", "--status-interval", "0.2", "--flush-interval", "0.1")
    try:
        with migrated.pg() as conn:
            insert_events(conn, ["newer"])  # delivery has to pass the old partitions' ends
        wait_until(lambda: "newer" in migrated.delivered_ids(), 60, "delivery of a newer event")
        dry = _prune(run, "--dry-run", "--wait", "30")
        assert dry[delivered]["action"] == "would drop", dry[delivered]
        assert dry[undelivered]["action"] == "kept" and "is not in ClickHouse" in dry[undelivered]["reason"]
        assert "b1" in dry[undelivered]["reason"] and "cdc backfill" in dry[undelivered]["reason"]
        assert {delivered, undelivered} <= _partitions(migrated)

        final = _prune(run, "--wait", "30")
        assert final[delivered]["action"] == "dropped"
        assert final[undelivered]["action"] == "kept"
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    remaining = _partitions(migrated)
    assert delivered not in remaining and empty not in remaining
    assert {undelivered, "outbox_default"} <= remaining
    with migrated.pg() as conn:
        assert sorted(r[0] for r in conn.execute("SELECT unique_id FROM outbox").fetchall()) == ["b1", "b2", "newer"]

    # Delivered after all (backfill), it may go too.
    ok(run("backfill", "--since", "2001-01-02", "--until", "2001-01-03"))
    proc = migrated.start("run", "--status-interval", "0.2")
    try:
        last = _prune(run, "--wait", "30")
    finally:
        stop(proc)
    assert last[undelivered]["action"] == "dropped", last[undelivered]
    assert "outbox_default" in _partitions(migrated)


@pytest.mark.single_slot("drops the one slot, cdc_outbox, by name")
def test_prune_refuses_without_a_slot(migrated: Target, run: Cli) -> None:
    _old_partition(migrated, "2001-01-01")
    _insert_old(migrated, "2001-01-01", ["x1"])
    ok(run("run", "--until-lsn", "current"))
    with migrated.pg() as conn:
        drop_slot_once_released(conn, "cdc_outbox")
    result = _prune(run, "--wait", "0")
    assert result["outbox_p20010101"]["action"] == "kept"
    assert "does not exist" in result["outbox_p20010101"]["reason"]
    human = ok(run("outbox", "prune", "--older-than", "7d", "--wait", "0")).stdout
    assert "outbox_p20010101" in human and "kept" in human

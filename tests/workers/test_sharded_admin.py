"""The DBA commands on a sharded outbox: status, doctor, slot list, checkpoint and replay, backfill, prune.

Each understands every shard: a slot and a high-water mark per shard, one
checkpoint file for all of them, backfilled rows under their shard's stream,
and no partition dropped while any shard's slot has not passed it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest
from support import Target, checked, insert_events, stop, wait_until

RUN = ("run", "--until-lsn", "current")


@pytest.fixture
def sharded4(pg_dsn: str, clickhouse_url: str) -> Target:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    return t


def shard_of(t: Target, ids: list[str]) -> dict[str, int]:
    with t.pg() as conn:
        rows = conn.execute("SELECT unique_id, shard_hash %% 4 FROM outbox WHERE unique_id = ANY(%s)", (ids,))
        return {str(u): int(k) for u, k in rows.fetchall()}


def test_status_and_slot_list_show_every_shards_slot(sharded4: Target) -> None:
    t = sharded4
    with t.pg() as conn:
        insert_events(conn, [f"s{i}" for i in range(40)])
    checked(t.cdc(*RUN))
    status = t.cdc("status", "--json")
    report = orjson.loads(status.stdout)
    assert status.returncode == 1 and report["status"] == "warning"
    assert [s["slot"]["name"] for s in report["shards"]] == [f"cdc_outbox_{k}" for k in range(4)]
    assert all(s["slot"]["exists"] and not s["slot"]["active"] for s in report["shards"])
    assert report["slot"] is None and report["postgres"]["live_workers"] == 0
    messages = [p["message"] for p in report["problems"]]
    assert "shard 2/4 (generation 1): replication slot cdc_outbox_2 is inactive: no `cdc run` is streaming from it" \
        in messages
    slots = orjson.loads(checked(t.cdc("slot", "list", "--json")).stdout)
    ours = {s["name"]: s["shard"]["shard"] for s in slots if s["ours"]}
    assert ours == {f"cdc_outbox_{k}": f"{k}/4" for k in range(4)}


def test_slot_advance_and_drop_of_the_family_name_name_the_shards_slots(sharded4: Target) -> None:
    t = sharded4
    expected = ("cdc: error: replication slot cdc_outbox does not exist: the outbox is split over 4 shard slots "
                "(cdc_outbox_0, cdc_outbox_1, cdc_outbox_2, cdc_outbox_3): name one of them")
    for args in (("slot", "advance", "--to-lsn", t.current_lsn(), "--yes"), ("slot", "drop", "--yes")):
        result = t.cdc(*args)
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == expected, result.stderr
    moved = orjson.loads(checked(t.cdc("slot", "advance", "cdc_outbox_1", "--to-lsn", t.current_lsn(), "--yes",
                                       "--json")).stdout)
    assert moved["slot"] == "cdc_outbox_1"
    assert t.cdc("slot", "drop", "nothing_like_it", "--yes").stderr.strip().endswith(
        "replication slot nothing_like_it does not exist: `cdc slot list` shows the slots there are")


def test_doctor_checks_each_shards_publication_filter_and_slot(sharded4: Target) -> None:
    t = sharded4
    report = orjson.loads(checked(t.cdc("doctor", "--json")).stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["shards"]["status"] == "PASS" and "4 shard(s)" in checks["shards"]["detail"]
    for k in range(4):
        assert checks[f"shard {k}/4 row filter"]["status"] == "PASS"
        assert checks[f"shard {k}/4 slot"]["status"] == "PASS"
        assert checks[f"shard {k}/4 publication"]["status"] == "PASS"
    with t.pg() as conn:
        conn.execute("ALTER PUBLICATION cdc_outbox_1 SET TABLE outbox WHERE ((shard_hash % 4) = 2)")
    broken = t.cdc("doctor", "--json")
    assert broken.returncode == 1
    check = {c["check"]: c for c in orjson.loads(broken.stdout)["checks"]}["shard 1/4 row filter"]
    assert check["status"] == "FAIL" and check["fix"].endswith("WHERE ((shard_hash % 4) = 1);")


def test_one_checkpoint_holds_every_shard_and_a_replay_rebuilds_each(sharded4: Target, tmp_path: Path) -> None:
    t = sharded4
    window = ("--retain", "1GB")
    first, second = [f"a{i}" for i in range(200)], [f"b{i}" for i in range(200)]
    with t.pg() as conn:
        insert_events(conn, first)
    checked(t.cdc(*RUN, *window))
    saved = tmp_path / "checkpoint.json"
    checked(t.cdc("checkpoint", "save", str(saved)))
    data = json.loads(saved.read_text())
    assert data["slot"] is None and len(data["shards"]) == 4
    assert all(s["replay_from_lsn"] and s["high_water_mark"] for s in data["shards"])
    assert data["replay_from_lsn"] == min((s["replay_from_lsn"] for s in data["shards"]),
                                          key=lambda text: int(text.split("/")[0], 16) << 32 | int(text.split("/")[1], 16))
    with t.pg() as conn:
        insert_events(conn, second[:100])
        insert_events(conn, second[100:])
    checked(t.cdc(*RUN, *window))
    database = t.clickhouse_url.rsplit("/", 1)[1]
    ch = t.ch()
    for table in ("events_cdc_progress_mv", "events_cdc_progress", "events_dead_letter", "events"):
        ch.execute(f"DROP TABLE {database}.{table}")  # the ClickHouse data is lost
    checked(t.cdc("migrate", "--shards", "4"))
    checked(t.cdc("run", "--from-checkpoint", str(saved), "--until-lsn", "current", *window))
    delivered = Counter(t.delivered_ids())
    # Each shard starts again at its own high-water mark's transaction: its last rows of the first wave.
    assert set(second) <= set(delivered) and max(delivered.values()) == 1
    assert set(delivered) - set(second) <= set(first)
    assert len(set(delivered) - set(second)) <= 4 * 200


def test_a_replay_while_workers_run_is_refused(sharded4: Target) -> None:
    t = sharded4
    worker = t.start("run")
    try:
        wait_until(lambda: orjson.loads(t.cdc("shards", "show", "--json").stdout)["workers"], 60, "a worker")
        refused = t.cdc("run", "--from-lsn", t.current_lsn(), "--until-lsn", "current")
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert refused.returncode == 1
    assert "a replay streams every shard, but 1 worker(s) are running" in refused.stderr.splitlines()[-1]


def test_backfill_delivers_each_shards_rows_under_its_own_stream(sharded4: Target) -> None:
    t = sharded4
    ids = [f"bf{i}" for i in range(120)]
    with t.pg() as conn:
        insert_events(conn, ids)
    summary = orjson.loads(checked(t.cdc("backfill", "--since", "2000-01-01", "--json")).stdout)
    assert summary["rows_read"] == 120 and summary["events_stored"] == 120
    rows = t.ch().execute("SELECT unique_id, stream FROM events_cdc_progress WHERE unique_id != ''")
    assert sorted(u for u, _ in rows) == sorted(ids)
    shards = shard_of(t, ids)
    assert all(stream == 100 + shards[uid] for uid, stream in rows)
    again = orjson.loads(checked(t.cdc("backfill", "--since", "2000-01-01", "--json")).stdout)
    assert again["duplicates"] == 120 and again["events_stored"] == 0


def test_prune_keeps_a_partition_until_every_shards_slot_has_passed_it(sharded4: Target) -> None:
    t = sharded4
    with t.pg() as conn:
        conn.execute("CREATE TABLE outbox_p20010101 PARTITION OF outbox FOR VALUES FROM ('2001-01-01') TO ('2001-01-02')")
        for uid in ("old-1", "old-2", "old-3"):
            conn.execute("INSERT INTO outbox (unique_id, event_type, payload, created_at) "
                         "VALUES (%s, 'old', '{}', '2001-01-01 10:00+00')", (uid,))
    checked(t.cdc(*RUN))
    # Delivered, but no worker runs to acknowledge what prune's fence needs: every slot must.
    kept = orjson.loads(checked(t.cdc("outbox", "prune", "--older-than", "7d", "--wait", "1", "--json")).stdout)
    (partition,) = kept["partitions"]
    assert partition["action"] == "kept" and "slot cdc_outbox_0 has acknowledged" in partition["reason"]
    worker = t.start("run", "--status-interval", "0.2", "--flush-interval", "0.1")
    try:
        with t.pg() as conn:
            insert_events(conn, [f"newer-{k}" for k in range(8)])  # delivery has to pass the partition's end
        wait_until(lambda: len([u for u in t.delivered_ids() if u.startswith("newer")]) == 8, 60, "newer events")
        dropped = orjson.loads(checked(t.cdc("outbox", "prune", "--older-than", "7d", "--wait", "30", "--json")).stdout)
    finally:
        code, err = stop(worker)
    assert code == 0, err[-2000:]
    assert [p["action"] for p in dropped["partitions"]] == ["dropped"], dropped["partitions"][0]["reason"]

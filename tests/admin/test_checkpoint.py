"""``cdc checkpoint show | save`` and the file format ``cdc run --from-checkpoint`` reads with load_checkpoint()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from admin_support import Cli, ok, refused
from support import Target, insert_events

from cdc.admin.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, replay_from
from cdc.lsn import parse_lsn


@pytest.mark.single_slot("the one slot's checkpoint file; tests/workers/test_sharded_admin.py saves every shard's")
def test_save_records_both_positions_and_a_replayable_start(migrated: Target, run: Cli, tmp_path: Path) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["c1", "c2", "c3"])
    ok(run("run", "--until-lsn", "current"))
    path = tmp_path / "cp.json"
    ok(run("checkpoint", "save", str(path)))
    data = read_checkpoint(path)
    assert data["format"] == "cdc-checkpoint" and data["version"] == 1
    assert data["server"]["system_identifier"].isdigit() and data["server"]["timeline"] >= 1
    assert data["slot"]["confirmed_flush_lsn"] == migrated.confirmed_lsn()
    hwm = data["clickhouse"]["high_water_mark"]
    assert hwm["origin"] == "stream" and hwm["commit_seq"] == 2
    expected = max(parse_lsn(data["slot"]["confirmed_flush_lsn"]), parse_lsn(hwm["commit_lsn"]))
    assert load_checkpoint(path) == expected
    shown = json.loads(ok(run("checkpoint", "show", "--json")).stdout)
    assert shown["replay_from_lsn"] == data["replay_from_lsn"]
    assert "replay from" in ok(run("checkpoint", "show")).stdout
    # `cdc run --from-checkpoint` accepts it: the slot can replay from there.
    with migrated.pg() as conn:
        insert_events(conn, ["c4"])
    ok(run("run", "--from-checkpoint", str(path), "--until-lsn", "current"))
    assert sorted(set(migrated.delivered_ids())) == ["c1", "c2", "c3", "c4"]


@pytest.mark.single_slot("drops the one slot, cdc_outbox, by name")
def test_without_clickhouse_or_slot(migrated: Target, run: Cli, tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    ok(run("checkpoint", "save", str(path), CDC_CLICKHOUSE_URL=""))
    assert read_checkpoint(path)["clickhouse"] is None
    assert load_checkpoint(path) == parse_lsn(str(migrated.confirmed_lsn()))
    with migrated.pg() as conn:
        conn.execute("SELECT pg_drop_replication_slot('cdc_outbox')")
    ok(run("checkpoint", "save", str(path), CDC_CLICKHOUSE_URL=""))
    with pytest.raises(CheckpointError, match="no position to replay from"):
        load_checkpoint(path)


def test_unusable_files_are_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        "missing.json": (None, "cannot read checkpoint"),
        "garbage.json": ("{not json", "is not JSON"),
        "other.json": ('{"format": "something-else"}', "is not a cdc checkpoint"),
        "future.json": ('{"format": "cdc-checkpoint", "version": 99}', "upgrade cdc"),
        "badlsn.json": ('{"format": "cdc-checkpoint", "version": 1, "replay_from_lsn": "nope"}', "is not an LSN"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)


def test_replay_starts_at_the_higher_real_position() -> None:
    assert replay_from(None, 0) is None
    assert replay_from(parse_lsn("0/1B00000"), 5) == parse_lsn("0/1B00000")  # backfill: not a WAL position
    # No --retain: the slot cannot go back before its confirmed position.
    assert replay_from(parse_lsn("0/1B00000"), parse_lsn("0/1A00000")) == parse_lsn("0/1B00000")
    # --retain keeps the slot behind: everything up to the high-water mark is stored already.
    assert replay_from(parse_lsn("0/1A00000"), parse_lsn("0/1B00000")) == parse_lsn("0/1B00000")


def test_save_to_an_unwritable_place_is_refused(migrated: Target, run: Cli, tmp_path: Path) -> None:
    refused(run("checkpoint", "save", str(tmp_path / "no" / "such" / "dir" / "cp.json")), "cannot write checkpoint")

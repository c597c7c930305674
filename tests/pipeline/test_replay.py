"""Replay from a saved LSN: `cdc run --from-lsn` within the window kept by `--retain`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import Target, checked, insert_events, wait_until

WINDOW = ("--retain", "1GB")


def _two_waves(t: Target) -> tuple[str, set[str], set[str]]:
    checked(t.cdc("migrate"))
    first = {f"a{i}" for i in range(300)}
    second = {f"b{i}" for i in range(300)}
    with t.pg() as conn:
        insert_events(conn, sorted(first))
    checked(t.cdc("run", "--until-lsn", "current", *WINDOW))
    saved = t.current_lsn()
    with t.pg() as conn:
        insert_events(conn, sorted(second)[:150])
        insert_events(conn, sorted(second)[150:])
    checked(t.cdc("run", "--until-lsn", "current", *WINDOW))
    assert sorted(t.delivered_ids()) == sorted(first | second)
    return saved, first, second


def test_replay_into_an_emptied_clickhouse_rebuilds_exactly_the_events_after_the_lsn(
    pg_dsn: str, clickhouse_url: str
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    saved, _, second = _two_waves(t)
    database = clickhouse_url.rsplit("/", 1)[1]
    ch = t.ch()
    for table in ("events_cdc_progress_mv", "events_cdc_progress", "events_dead_letter", "events"):
        ch.execute(f"DROP TABLE {database}.{table}")  # the ClickHouse data is lost
    checked(t.cdc("run", "--from-lsn", saved, "--until-lsn", "current", *WINDOW))
    assert sorted(t.delivered_ids()) == sorted(second)


@pytest.mark.single_slot("reads the one pipeline's summary line")
def test_replay_into_a_table_that_holds_the_events_adds_no_duplicates(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    saved, first, second = _two_waves(t)
    replay = checked(t.cdc("run", "--from-lsn", saved, "--until-lsn", "current", *WINDOW))
    assert sorted(t.delivered_ids()) == sorted(first | second)
    assert '"duplicates":300' in replay.stderr.replace(" ", "")


@pytest.mark.single_slot("names the one slot in the refusal")
def test_replay_from_before_what_the_slot_holds_is_refused_with_the_oldest_lsn(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        insert_events(conn, ["x1"])
    checked(t.cdc("run", "--until-lsn", "current"))  # no window: the slot moves on
    oldest = t.confirmed_lsn()
    result = t.cdc("run", "--from-lsn", "0/1", "--until-lsn", "current")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "cannot replay from 0/1" in line and f"nothing older than {oldest}" in line


def test_a_checkpoint_saved_on_another_cluster_is_refused(pg_dsn: str, clickhouse_url: str, tmp_path: Path) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    saved = tmp_path / "checkpoint.json"
    checked(t.cdc("checkpoint", "save", str(saved)))
    data = json.loads(saved.read_text())
    data["server"]["system_identifier"] = "1234567890123456789"
    saved.write_text(json.dumps(data))
    result = t.cdc("run", "--from-checkpoint", str(saved), "--until-lsn", "current")
    assert result.returncode == 1
    assert "saved on PostgreSQL cluster 1234567890123456789" in result.stderr.strip().splitlines()[-1]


def test_replay_into_a_table_that_lost_rows_restores_them(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    saved, first, second = _two_waves(t)
    ch = t.ch()
    ch.execute("TRUNCATE TABLE events")  # a mistake; the progress ledger still claims every event
    warned = t.cdc("run", "--until-lsn", "current", *WINDOW)
    assert warned.returncode == 0
    assert any("no longer holds" in line and "cdc verify --repair" in line for line in warned.stderr.splitlines())

    checked(t.cdc("run", "--from-lsn", saved, "--until-lsn", "current", *WINDOW))
    assert sorted(r[0] for r in ch.execute("SELECT unique_id FROM events")) == sorted(second)
    # What the slot no longer holds (before the saved position) is for cdc verify --repair.
    assert json.loads(t.cdc("verify", "--json").stdout)["missing"]["count"] == len(first)


def test_replay_from_a_checkpoint_restores_only_the_rows_the_table_lost(
    pg_dsn: str, clickhouse_url: str, tmp_path: Path
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    first = [f"c{i}" for i in range(200)]
    second = [f"d{i}" for i in range(200)]
    with t.pg() as conn:
        insert_events(conn, first[:100])
        insert_events(conn, first[100:])  # the checkpoint's own transaction: a replay from it sends it again
    checked(t.cdc("run", "--until-lsn", "current", *WINDOW))
    saved = tmp_path / "checkpoint.json"
    checked(t.cdc("checkpoint", "save", str(saved)))
    with t.pg() as conn:
        insert_events(conn, second)
    checked(t.cdc("run", "--until-lsn", "current", *WINDOW))
    ch = t.ch()
    ch.execute("ALTER TABLE events DELETE WHERE unique_id IN ('c7', 'd0', 'd13', 'd199')")
    wait_until(lambda: ch.execute("SELECT count() FROM events WHERE unique_id = 'd13'") == [(0,)], 60, "the delete")

    checked(t.cdc("run", "--from-checkpoint", str(saved), "--until-lsn", "current", *WINDOW))
    held = sorted(r[0] for r in ch.execute("SELECT unique_id FROM events"))
    assert held == sorted(set(first + second) - {"c7"})
    # Only the three lost rows after the checkpoint were inserted again: the ledger records every insert.
    assert sorted(t.delivered_ids()) == sorted(first + second + ["d0", "d13", "d199"])
    report = json.loads(t.cdc("verify", "--json").stdout)
    assert report["missing"]["count"] == 1 and report["missing"]["first"][0]["unique_id"] == "c7"

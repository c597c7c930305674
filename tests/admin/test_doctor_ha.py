"""``cdc doctor`` on a PostgreSQL 18 primary with a physical standby: each link of the failover chain.

Real primary + standby (servers.pg_standby); every finding is provoked by
changing the real setting, never by faking a server's answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from servers.pg_standby import StandbyPair
from support import TEST_SHARDS, Target, wait_until

from admin_support import Cli, ok

SLOT = "cdc_outbox"


def _doctor(cli: Cli, pair: StandbyPair, *extra: str) -> dict[str, list[dict[str, Any]]]:
    result = cli("doctor", "--json", "--standby-dsn", pair.standby_dsn(), *extra)
    by_check: dict[str, list[dict[str, Any]]] = {}
    for check in json.loads(result.stdout)["checks"]:
        by_check.setdefault(check["check"], []).append(check)
    return by_check


def _status(found: dict[str, list[dict[str, Any]]], check: str) -> list[str]:
    return [c["status"] for c in found.get(check, [])]


def _set(dsn: str, **settings: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


def _migrated(pair: StandbyPair, clickhouse_url: str, *args: str) -> Cli:
    cli = Cli(Target(pair.dsn(), clickhouse_url))
    ok(cli("migrate", *args))
    return cli


@pytest.mark.single_slot("syncs the one slot, cdc_outbox; the sharded case is the last test here")
def test_a_sound_chain_passes_and_a_temporary_synced_slot_is_named_with_its_fix(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    cli = _migrated(pg_standby, clickhouse_url)
    pg_standby.wait_caught_up()

    def copied() -> bool:
        pg_standby.sync_slots_now()  # skipped while the sync worker is in a round: poll
        return pg_standby.synced_slot(SLOT) is not None

    wait_until(copied, 30, "the slot to reach the standby")
    state = pg_standby.synced_slot(SLOT)
    found = _doctor(cli, pg_standby)
    # No consumer has moved the fresh slot yet: the standby's copy is still temporary.
    assert state == (True, True), state
    (slot,) = found["synced slot"]
    assert slot["status"] == "FAIL" and "dropped at promotion" in slot["detail"], slot
    assert "pg_log_standby_snapshot" in slot["fix"]
    # The outbox is empty: advancing the slot to make the copy persistent loses nothing.
    pg_standby.wait_slot_synced(SLOT, advance=True)
    found = _doctor(cli, pg_standby)
    for check in ("failover slot", "synchronized_standby_slots", "synchronized standby", "standby",
                  "sync_replication_slots", "hot_standby_feedback", "primary_conninfo", "synced slot"):
        assert _status(found, check) == ["PASS"], (check, found.get(check))
    assert pg_standby.physical_slot in found["synchronized_standby_slots"][0]["detail"]


def test_standby_settings_that_lose_the_slot_at_promotion_each_fail_with_their_fix(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    cli = _migrated(pg_standby, clickhouse_url)
    with psycopg.connect(pg_standby.standby_dsn(), autocommit=True) as conn:
        conninfo = str(conn.execute("SHOW primary_conninfo").fetchone()[0])  # type: ignore[index]
    without_db = " ".join(part for part in conninfo.split() if not part.startswith("dbname="))
    _set(pg_standby.standby_dsn(), sync_replication_slots="off", hot_standby_feedback="off",
         primary_conninfo=without_db)
    found = _doctor(cli, pg_standby)
    for check, fix in (("sync_replication_slots", "sync_replication_slots = on"),
                       ("hot_standby_feedback", "hot_standby_feedback = on"),
                       ("primary_conninfo", "dbname=")):
        (item,) = found[check]
        assert item["status"] == "FAIL" and fix in item["fix"], item
    assert "has no dbname" in found["primary_conninfo"][0]["detail"]
    assert "password" not in json.dumps(found["primary_conninfo"])
    # The slot (each shard's, when sharded) never reached the standby: a promotion would lose it.
    slots = found["synced slot"]
    assert len(slots) == TEST_SHARDS and all(s["status"] == "FAIL" and "not on standby" in s["detail"]
                                             for s in slots), slots
    result = cli("doctor", "--standby-dsn", pg_standby.standby_dsn())
    assert result.exit_code == 1


@pytest.mark.single_slot("expects the one slot's failover finding; the sharded case is the last test here")
def test_primary_side_findings_no_failover_slot_empty_list_and_a_standby_down(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    cli = _migrated(pg_standby, clickhouse_url, "--no-failover")
    _set(pg_standby.dsn(), synchronized_standby_slots="")
    found = _doctor(cli, pg_standby)
    (failover,) = found["failover slot"]
    assert failover["status"] == "WARN" and "ALTER_REPLICATION_SLOT" in failover["fix"], failover
    (listed,) = found["synchronized_standby_slots"]
    assert listed["status"] == "WARN" and pg_standby.physical_slot in listed["fix"], listed
    assert "not in synchronized_standby_slots" in found["synchronized standby"][0]["detail"]

    _set(pg_standby.dsn(), synchronized_standby_slots=pg_standby.physical_slot)
    pg_standby.standby.stop("fast")
    found = _doctor(cli, pg_standby)
    (down,) = found["synchronized standby"]
    assert down["status"] == "WARN" and "is down" in down["detail"] and "stalls" in down["detail"], down
    (unreachable,) = found["standby"]
    assert unreachable["status"] == "WARN" and "cannot connect" in unreachable["detail"], unreachable


def test_a_primary_without_standbys_gets_no_ha_checks(pg_standby: StandbyPair, clickhouse_url: str) -> None:
    # The pair's standby is what makes the chain apply: without it (slot dropped), doctor says nothing of HA.
    cli = _migrated(pg_standby, clickhouse_url)
    pg_standby.standby.stop("fast")
    _set(pg_standby.dsn(), synchronized_standby_slots="")
    with psycopg.connect(pg_standby.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (pg_standby.physical_slot,))
    result = cli("doctor", "--json")
    checks = {c["check"] for c in json.loads(result.stdout)["checks"]}
    assert not checks & {"failover slot", "synchronized_standby_slots", "synchronized standby", "synced slot"}


def test_status_warns_when_a_synchronized_standby_is_down(pg_standby: StandbyPair, clickhouse_url: str) -> None:
    cli = _migrated(pg_standby, clickhouse_url)
    healthy = json.loads(cli("status", "--json").stdout)
    assert {c["check"]: c["status"] for c in healthy["postgres"]["ha"]}["synchronized standby"] == "PASS"
    assert not [p for p in healthy["problems"] if "standby" in p["message"]], healthy["problems"]

    pg_standby.standby.stop("fast")
    result = cli("status", "--json")
    data = json.loads(result.stdout)
    down = [p for p in data["problems"] if "is down" in p["message"]]
    assert len(down) == 1 and down[0]["level"] == "warning", data["problems"]
    assert "stalls" in down[0]["message"] and result.exit_code >= 1


def _standby_lines(found: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    return sorted((c["status"], c["detail"]) for c in found["standby"])


def test_several_standbys_by_repeated_flag_or_one_per_line_in_cdc_standby_dsn(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    cli = _migrated(pg_standby, clickhouse_url)
    # key=value DSNs have spaces in them: the variable takes one DSN per line, not per word.
    live = make_conninfo("", **conninfo_to_dict(pg_standby.standby_dsn()))
    assert " " in live
    gone = "host=127.0.0.1 port=1 dbname=postgres user=cdc password=s3cret-standby connect_timeout=2"
    by_flag = json.loads(cli("doctor", "--json", "--standby-dsn", live, "--standby-dsn", gone).stdout)
    by_env = json.loads(cli("doctor", "--json", CDC_STANDBY_DSN=f"\n{live}\n\n  {gone}\n").stdout)
    for result in (by_flag, by_env):
        found: dict[str, list[dict[str, Any]]] = {}
        for check in result["checks"]:
            found.setdefault(check["check"], []).append(check)
        statuses = _standby_lines(found)
        assert [s for s, _ in statuses] == ["PASS", "WARN"], statuses
        assert f":{pg_standby.standby.port}" in statuses[0][1] and "cannot connect" in statuses[1][1], statuses
        assert _status(found, "synced slot"), found  # the live one was checked through
        assert "s3cret-standby" not in json.dumps(result)


def test_status_checks_each_standby_given_and_grades_its_findings_as_warnings(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    cli = _migrated(pg_standby, clickhouse_url)
    gone = "host=127.0.0.1 port=1 dbname=postgres user=cdc connect_timeout=2"
    result = cli("status", "--json", CDC_STANDBY_DSN=f"{make_conninfo('', **conninfo_to_dict(pg_standby.standby_dsn()))}\n{gone}")
    data = json.loads(result.stdout)
    standby = [c for c in data["postgres"]["ha"] if c["check"] == "standby"]
    assert sorted(c["status"] for c in standby) == ["PASS", "WARN"], standby
    assert any(c["check"] == "sync_replication_slots" and c["status"] == "PASS" for c in data["postgres"]["ha"])
    unreachable = [p for p in data["problems"] if "cannot connect" in p["message"]]
    assert len(unreachable) == 1 and unreachable[0]["level"] == "warning", data["problems"]
    assert result.exit_code == 1, data["problems"]


def test_a_sharded_outbox_has_each_shards_slot_checked_on_the_primary_and_on_the_standby(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    cli = _migrated(pg_standby, clickhouse_url, "--shards", "2")
    shards = [f"{SLOT}_{k}" for k in range(2)]
    pg_standby.wait_caught_up()
    for name in shards:
        pg_standby.wait_slot_synced(name, advance=True)
    found = _doctor(cli, pg_standby)
    assert sorted(c["detail"] for c in found["failover slot"]) == [
        f"replication slot {name} is a failover slot" for name in shards]
    synced = found["synced slot"]
    assert [c["status"] for c in synced] == ["PASS", "PASS"]
    assert all(any(f"slot {name} on standby" in c["detail"] for c in synced) for name in shards), synced
    status = json.loads(cli("status", "--json", "--standby-dsn", pg_standby.standby_dsn()).stdout)
    ha = {(c["check"], c["status"]) for c in status["postgres"]["ha"]}
    assert ("failover slot", "PASS") in ha and ("synced slot", "PASS") in ha
    assert sum(c["check"] == "synced slot" for c in status["postgres"]["ha"]) == 2

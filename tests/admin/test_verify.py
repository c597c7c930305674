"""``cdc verify`` on real servers: agreement, what is in flight, the scope's edges, and bad inputs."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from admin_support import Cli, ok, refused
from psycopg.conninfo import make_conninfo

import structlog

from cdc.admin.verify import Verification, VerifyOptions
from cdc.core.reconcile import bucket_of, id_hash
from cdc.settings import Settings
from support import Target, insert_events, stop, wait_until


def verify(run: Cli, *args: str, code: int = 0, **env: str) -> dict[str, Any]:
    result = run("verify", "--json", *args, **env)
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["exit_code"] == code
    return report


def delete_events(t: Target, where: str) -> None:
    """ALTER TABLE events DELETE, waited for (a mutation runs in the background)."""
    ch = t.ch()
    ch.execute(f"ALTER TABLE events DELETE WHERE {where}")
    wait_until(lambda: ch.execute(f"SELECT count() FROM events WHERE {where}") == [(0,)], 60, "the delete to apply")


def named(report: dict[str, Any], kind: str) -> set[str]:
    return {row["unique_id"] for row in report[kind]["first"]}


def test_verify_agrees_after_delivery_counting_retries_once_and_dead_letters_as_delivered(
    migrated: Target, run: Cli
) -> None:
    with migrated.pg() as conn:
        insert_events(conn, [f"e{i}" for i in range(500)])
        insert_events(conn, ["e1", "e2"])  # the application's retries: one event each
        conn.execute("INSERT INTO outbox (unique_id, event_type, occurred_at) VALUES ('too-old', 't', '1900-01-01')")
    ok(run("run", "--until-lsn", "current"))
    assert migrated.ch().execute("SELECT count() FROM events_dead_letter") == [(1,)]

    report = verify(run)
    assert report["status"] == "agree"
    assert (report["outbox_rows"], report["outbox_ids"], report["clickhouse_ids"]) == (503, 501, 501)
    assert report["buckets"] == {"total": 4096, "differing": 0}
    # One pass over the outbox rows on each server, and no hash sent: the buckets agree.
    pg_read, ch_read = report["read"]["postgres"], report["read"]["clickhouse"]
    assert (pg_read["passes"], pg_read["rows"], pg_read["hashes_sent"], ch_read["hashes_sent"]) == (1, 503, 0, 0)
    assert pg_read["bytes"] > 0 and ch_read["rows"] >= 501
    assert report["missing"]["count"] == report["unexpected"]["count"] == report["in_flight"]["count"] == 0
    text = ok(run("verify")).stdout
    assert "0 of 4096 differ" in text and text.strip().splitlines()[-1].startswith("AGREE")


def test_rows_the_slot_still_holds_are_in_flight_and_lost_rows_are_missing(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, [f"a{i}" for i in range(200)])
    ok(run("run", "--until-lsn", "current"))
    delete_events(migrated, "unique_id IN ('a3', 'a150')")
    with migrated.pg() as conn:
        insert_events(conn, ["late-1", "late-2"])  # committed, not delivered: cdc run is not running

    report = verify(run, code=1)
    assert (report["missing"]["count"], named(report, "missing")) == (2, {"a3", "a150"})
    assert (report["in_flight"]["count"], named(report, "in_flight")) == (2, {"late-1", "late-2"})
    assert report["undetermined"]["count"] == 0 and "has not reached the snapshot" in report["delivered"]

    ok(run("run", "--until-lsn", "current"))
    report = verify(run, code=1)
    assert report["in_flight"]["count"] == 0 and named(report, "missing") == {"a3", "a150"}


@pytest.mark.single_slot("waits for cdc run to hold the one slot")
def test_rows_buffered_by_a_running_pipeline_are_in_flight(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["first"])
    ok(run("run", "--until-lsn", "current"))
    # A pipeline that holds what it reads (a long flush interval) and acknowledges nothing (a replay window).
    proc = migrated.start("run", "--flush-interval", "3600", "--retain", "1GB")
    try:
        wait_until(lambda: _slot_active(migrated), 30, "cdc run to hold the slot")
        with migrated.pg() as conn:
            insert_events(conn, ["held-1", "held-2", "held-3"])
        time.sleep(1.0)
        report = verify(run, "--wait", "0")
        assert (report["in_flight"]["count"], named(report, "in_flight")) == (3, {"held-1", "held-2", "held-3"})
        assert report["missing"]["count"] == 0 and "(in use)" in report["delivered"]
    finally:
        code, err = stop(proc, signal.SIGTERM)
        assert code == 0, err[-2000:]
    assert verify(run)["status"] == "agree"


@pytest.mark.single_slot("the auditor has the one-slot grants; tests/shards/test_shard_privileges.py covers the shards'")
def test_without_a_readable_slot_undelivered_rows_are_undetermined(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["x1"])
    ok(run("run", "--until-lsn", "current"))
    with migrated.pg() as conn:
        insert_events(conn, ["x2"])
        # An auditor may read the outbox but not the slot (no REPLICATION): x2 may be in flight or lost.
        conn.execute("CREATE ROLE cdc_auditor LOGIN PASSWORD 'audit-pw'")
        conn.execute("GRANT SELECT ON outbox TO cdc_auditor")
    auditor = make_conninfo(migrated.pg_dsn, user="cdc_auditor", password="audit-pw")
    try:
        report = verify(run, "--wait", "0", code=2, CDC_PG_DSN=auditor)
    finally:
        with migrated.pg() as conn:
            conn.execute("DROP OWNED BY cdc_auditor")
            conn.execute("DROP ROLE cdc_auditor")
    assert report["status"] == "cannot tell"
    assert (report["undetermined"]["count"], named(report, "undetermined")) == (1, {"x2"})
    assert "the slot could not be read" in report["undetermined"]["reason"]
    assert "audit-pw" not in json.dumps(report)


@pytest.mark.single_slot("drops the default slot, which a sharded outbox does not have")
def test_with_the_slot_gone_every_absent_row_is_missing(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["s1"])
    ok(run("run", "--until-lsn", "current"))
    ok(run("slot", "drop", "--yes"))
    with migrated.pg() as conn:
        insert_events(conn, ["while-no-slot"])
    report = verify(run, code=1)
    assert named(report, "missing") == {"while-no-slot"} and "does not exist" in report["delivered"]


def test_a_retry_across_the_since_edge_is_not_missing(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("INSERT INTO outbox (unique_id, event_type, created_at) VALUES ('r', 't', '2001-01-01')")
    ok(run("run", "--until-lsn", "current"))
    with migrated.pg() as conn:
        insert_events(conn, ["r", "fresh"])  # the retry is deduplicated: ClickHouse keeps the first row's id
    ok(run("run", "--until-lsn", "current"))
    assert sorted(migrated.delivered_ids()) == ["fresh", "r"]
    report = verify(run, "--since", "2010-01-01")
    assert (report["outbox_ids"], report["scope"]["since"]) == (2, "2010-01-01")
    assert report["missing"]["count"] == 0


def test_events_older_than_the_outbox_retention_are_never_unexpected_even_in_a_bucket_that_differs(
    migrated: Target, run: Cli
) -> None:
    # An old event and a new one in the same bucket, the old one's hash first: the drill-down streams both.
    old, new = _same_bucket_pair()
    with migrated.pg() as conn:
        conn.execute("INSERT INTO outbox (unique_id, event_type, created_at) VALUES (%s, 't', '2001-01-01')", (old,))
        insert_events(conn, [new, "other"])
    ok(run("run", "--until-lsn", "current"))
    with migrated.pg() as conn:
        conn.execute("DELETE FROM outbox WHERE unique_id = %s", (old,))  # past the outbox's retention
    ok(run("run", "--until-lsn", "current"))
    delete_events(migrated, f"unique_id = '{new}'")
    for args in ((), ("--since", "2010-01-01")):
        report = verify(run, *args, code=1)
        assert named(report, "missing") == {new} and report["unexpected"]["count"] == 0, args
        assert report["buckets"]["differing"] == 1


def _same_bucket_pair() -> tuple[str, str]:
    seen: dict[int, tuple[int, str]] = {}
    for i in range(100_000):
        uid = f"edge-{i}"
        h = id_hash(uid)
        if bucket_of(h) in seen:
            other_h, other = seen[bucket_of(h)]
            return (other, uid) if other_h < h else (uid, other)
        seen[bucket_of(h)] = (h, uid)
    raise AssertionError("no two ids share a bucket")


def test_a_drill_down_in_many_passes_finds_what_one_pass_finds(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, [f"p{i}" for i in range(400)])
    ok(run("run", "--until-lsn", "current"))
    delete_events(migrated, "unique_id IN ('p1', 'p99', 'p200', 'p399')")
    migrated.ch().execute("INSERT INTO events (unique_id, event_type, outbox_id) SELECT 'stray', 't', 0")
    settings = Settings(pg_dsn=migrated.pg_dsn, sink_url=migrated.clickhouse_url)
    found = []
    for chunk_rows in (4_000_000, 1):  # one pass; one pass per differing bucket
        options = VerifyOptions(samples=100, chunk_rows=chunk_rows)
        with Verification(settings, options, log=structlog.get_logger()) as job:
            report = job.run().as_dict()
        found.append((named(report, "missing"), named(report, "unexpected"), report["read"]["postgres"]["passes"]))
    assert found[0][:2] == found[1][:2] == ({"p1", "p99", "p200", "p399"}, {"stray"})
    assert (found[0][2], found[1][2]) == (2, 1 + 5)  # 5 differing buckets (4 missing, 1 unexpected ids)


def test_events_no_outbox_row_explains_are_unexpected(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["real"])
    ok(run("run", "--until-lsn", "current"))
    ch = migrated.ch()
    # One typed in by hand (no outbox id at all), one claiming the outbox row of another event.
    ch.execute("INSERT INTO events (unique_id, event_type, outbox_id) SELECT 'by-hand', 't', 0")
    ch.execute("INSERT INTO events (unique_id, event_type, outbox_id, commit_lsn) "
               "SELECT 'impostor', 't', outbox_id, commit_lsn FROM events WHERE unique_id = 'real'")
    report = verify(run, code=1)
    assert report["unexpected"]["count"] == 2 and named(report, "unexpected") == {"by-hand", "impostor"}
    assert report["missing"]["count"] == 0


@pytest.mark.single_slot("--from-lsn reads one slot (refused when sharded: tests/workers)")
def test_from_lsn_checks_only_what_was_committed_after_it(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, [f"w1-{i}" for i in range(50)])
    ok(run("run", "--until-lsn", "current", "--retain", "1GB"))
    saved = migrated.current_lsn()
    with migrated.pg() as conn:
        insert_events(conn, [f"w2-{i}" for i in range(50)])
    ok(run("run", "--until-lsn", "current", "--retain", "1GB"))
    delete_events(migrated, "unique_id = 'w1-7'")
    assert named(verify(run, code=1), "missing") == {"w1-7"}
    report = verify(run, "--from-lsn", saved)
    assert report["outbox_ids"] == 50 and report["scope"]["from_lsn"] == saved


@pytest.mark.single_slot("--from-lsn reads one slot (refused when sharded: tests/workers)")
def test_bad_inputs_give_one_line_and_exit_2(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        insert_events(conn, ["b1"])
    ok(run("run", "--until-lsn", "current"))  # no replay window: the slot lets go of older WAL
    refused(run("verify", "--since", "last tuesday-ish"), "--since 'last tuesday-ish' is not a timestamp", code=2)
    refused(run("verify", "--since", "2020-01-01'; DROP TABLE outbox; --"), "is not a timestamp", code=2)
    refused(run("verify", "--from-lsn", "0/1"), "--from-lsn 0/1: slot cdc_outbox no longer holds it", code=2)
    refused(run("verify", "--from-lsn", "nonsense"), "is not an LSN", code=2)
    refused(run("verify", "--since", "2020-01-01", "--from-lsn", "0/1"), "not both", code=2)
    refused(run("verify", "--outbox-table", "no_such_outbox"), "outbox table public.no_such_outbox does not exist",
            code=2)
    refused(run("verify", "--clickhouse-table", "no_such_events"), "no_such_events and", "do not exist", code=2)
    migrated.ch().execute("DROP TABLE events")
    refused(run("verify"), ".events does not exist", code=2)
    with migrated.pg() as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


def _slot_active(t: Target) -> bool:
    with t.pg() as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'").fetchone()
    return bool(row and row[0])

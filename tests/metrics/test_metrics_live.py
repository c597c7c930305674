"""A live `cdc run --metrics-addr`: what it exports is what it did, and heartbeats time an idle pipeline."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from typing import Any

import orjson
import pytest
from metrics_support import LiveRun, Samples, value
from servers import ClickHouse
from servers.prometheus import PrometheusServer
from support import CDC, Target, insert_events, wait_until
from test_metrics_docs import ALERTS, DASHBOARD, named_in

from cdc.lsn import parse_lsn

FAST = ("--flush-interval", "0.2", "--status-interval", "0.5")


@pytest.mark.single_slot("reads one pipeline's series; a worker's: tests/metrics/test_metrics_sharded.py")
def test_the_endpoint_counts_what_the_run_stored_and_names_everything_the_docs_use(migrated: Target) -> None:
    t = migrated
    run = LiveRun(t, *FAST, "--heartbeat-interval", "0.3")
    try:
        with t.pg() as conn:
            for n in range(3):
                insert_events(conn, [f"live-{n}-{r}" for r in range(10)])
            insert_events(conn, ["live-0-0"])  # the application retries: a duplicate
            conn.execute("INSERT INTO outbox (unique_id, event_type) VALUES ('', 'no id')")  # a dead letter

        def outcome(name: str) -> float | None:
            return value(run.samples(), "cdc_events_total", slot="cdc_outbox", outcome=name)

        wait_until(lambda: outcome("stored") == 30 and outcome("dead_letter") == 1, 60, "30 events stored")
        wait_until(lambda: (value(run.samples(), "cdc_heartbeat_latency_seconds_count", slot="cdc_outbox") or 0)
                   >= 2, 60, "two heartbeats timed")
        wait_until(lambda: value(run.samples(), "cdc_slot_lag_bytes", slot="cdc_outbox") is not None, 60, "the lag")
        samples = run.samples()
        top = subprocess.run([*CDC, "top", "--once", "--json", "--interval", "0.3", "--metrics-addr", run.address],
                             capture_output=True, text=True, timeout=60)
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    assert value(samples, "cdc_events_total", slot="cdc_outbox", outcome="duplicate") == 1
    assert value(samples, "cdc_events_total", slot="cdc_outbox", outcome="already_stored") == 0
    # Every stored row timed once, heartbeats never among them.
    assert value(samples, "cdc_commit_to_stored_seconds_count", slot="cdc_outbox") == 30
    assert (value(samples, "cdc_batches_total", slot="cdc_outbox") or 0) >= 1
    assert value(samples, "cdc_batch_rows_sum", slot="cdc_outbox") == 30
    assert value(samples, "cdc_heartbeat_interval_seconds", slot="cdc_outbox") == 0.3
    assert value(samples, "cdc_buffer_rows", slot="cdc_outbox") == 0
    assert value(samples, "cdc_dedup_window_ids", slot="cdc_outbox") == 30
    assert value(samples, "cdc_clickhouse_errors_total", slot="cdc_outbox") == 0
    confirmed = value(samples, "cdc_confirmed_lsn", slot="cdc_outbox")
    assert confirmed is not None and confirmed <= parse_lsn(t.confirmed_lsn() or "0/0")
    info = [labels for name, labels in samples if name == "cdc_info"]
    assert info == [(("publication", "cdc_outbox"), ("sink", "clickhouse"), ("slot", "cdc_outbox"),
                     ("version", info[0][3][1]))]
    # Exported only where the server limits the WAL a slot may hold (max_slot_wal_keep_size, unset here).
    exported = {name for name, _ in samples} | {"cdc_slot_safe_wal_bytes"}
    for path in (ALERTS, DASHBOARD):
        assert named_in(path) <= exported, sorted(named_in(path) - exported)
    assert t.ch().execute("SELECT count() FROM events") == [(30,)]
    assert t.ch().execute("SELECT count() FROM events_dead_letter") == [(1,)]
    # `cdc top` reads the same run: its one pipeline, idle now, with what it stored and how fast.
    assert top.returncode == 0, top.stderr
    [frame] = orjson.loads(top.stdout)
    assert (frame["endpoint"], frame["slot"]) == (run.address, "cdc_outbox")
    assert frame["rates"]["stored"] == 0 and frame["dead_letters"] == 1 and frame["errors"] == 0
    assert frame["lag_bytes"] is not None and frame["buffer_rows"] == 0
    assert frame["last_flush_ago"] is not None and frame["rows_per_flush"] is not None
    assert frame["latency_p50"] is not None and frame["latency_p50"] <= frame["latency_p99"]
    assert frame["lag_seconds"] is not None and frame["heartbeat_p99"] is not None


@pytest.mark.single_slot("reads one pipeline's series; a worker's: tests/metrics/test_metrics_sharded.py")
def test_heartbeats_time_an_idle_pipeline_move_its_slot_and_never_become_rows(migrated: Target) -> None:
    t = migrated
    before = parse_lsn(t.confirmed_lsn() or "0/0")
    run = LiveRun(t, *FAST, "--heartbeat-interval", "0.2")
    try:
        wait_until(lambda: (value(run.samples(), "cdc_heartbeat_latency_seconds_count", slot="cdc_outbox") or 0)
                   >= 3, 60, "three heartbeats timed")
        # Each heartbeat is a transaction of its own: acknowledging it moves the slot on an idle outbox.
        wait_until(lambda: parse_lsn(t.confirmed_lsn() or "0/0") > before, 60, "the idle slot to move")
        samples = run.samples()
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    latency_sum = value(samples, "cdc_heartbeat_latency_seconds_sum", slot="cdc_outbox")
    assert latency_sum is not None and latency_sum > 0
    last = value(samples, "cdc_last_heartbeat_timestamp_seconds", slot="cdc_outbox")
    assert last is not None and last > 0
    assert value(samples, "cdc_events_total", slot="cdc_outbox", outcome="stored") == 0
    assert value(samples, "cdc_commit_to_stored_seconds_count", slot="cdc_outbox") == 0
    assert t.ch().execute("SELECT count() FROM events") == [(0,)]
    assert t.ch().execute("SELECT count() FROM events_dead_letter") == [(0,)]
    assert not [r for r in run.records() if r.get("level") in ("warning", "error")], run.tail()


@pytest.mark.single_slot("reads one pipeline's series; a worker's: tests/metrics/test_metrics_sharded.py")
def test_a_heartbeat_behind_an_unstored_batch_is_timed_only_once_that_batch_is_stored(
    migrated: Target, clickhouse_server: ClickHouse
) -> None:
    if not clickhouse_server.can_restart:
        pytest.skip("this ClickHouse is not ours to stop")
    t, ch = migrated, clickhouse_server
    run = LiveRun(t, *FAST, "--heartbeat-interval", "0.2", "--retry-initial", "0.1", "--retry-max", "0.5")

    def sample(name: str, **labels: str) -> float:
        return value(run.samples(), name, slot="cdc_outbox", **labels) or 0.0

    try:
        wait_until(lambda: sample("cdc_heartbeat_latency_seconds_count") >= 2, 60, "two heartbeats timed")
        ch.stop()
        try:
            with t.pg() as conn:
                insert_events(conn, ["during-outage"])
            inserted = time.time()
            # The row's batch is retried; heartbeats keep coming through the slot behind it.
            wait_until(lambda: sample("cdc_clickhouse_errors_total") >= 3, 60, "the insert to fail")
            timed = sample("cdc_heartbeat_latency_seconds_count")
            wait_until(lambda: sample("cdc_clickhouse_errors_total") >= 6, 60, "more failed inserts")
            during = run.samples()
        finally:
            ch.start()
        wait_until(lambda: sample("cdc_events_total", outcome="stored") == 1, 120, "the row stored")
        wait_until(lambda: sample("cdc_last_heartbeat_timestamp_seconds") > inserted, 60,
                   "a heartbeat from after the row timed")
        after = run.samples()
    finally:
        code = run.stop()
    assert code == 0, run.tail()

    def of(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, slot="cdc_outbox", **labels) or 0.0

    # Nothing emitted after the row was timed while the row was not stored.
    assert of(during, "cdc_last_heartbeat_timestamp_seconds") < inserted
    assert of(during, "cdc_heartbeat_latency_seconds_count") == timed
    # Once it was, they were, with the outage in their latency (it lasted several retries, well over 1 s).
    assert of(after, "cdc_heartbeat_latency_seconds_count") > timed
    waited = of(after, "cdc_heartbeat_latency_seconds_count") - of(after, "cdc_heartbeat_latency_seconds_bucket",
                                                                     le="1.0")
    assert waited >= 1
    assert t.ch().execute("SELECT count() FROM events") == [(1,)]


@pytest.mark.parametrize("address", ["9108", "localhost:http", "::1:9108"])
def test_a_malformed_metrics_address_is_a_usage_error(migrated: Target, address: str) -> None:
    result = migrated.cdc("run", "--until-lsn", "current", "--metrics-addr", address, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "HOST:PORT" in result.stderr or "brackets" in result.stderr


def test_a_busy_metrics_port_is_one_line_and_nothing_is_read(migrated: Target) -> None:
    t = migrated
    with t.pg() as conn:
        insert_events(conn, ["waits"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = t.cdc("run", "--until-lsn", "current", "--metrics-addr", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cdc: error: cannot serve metrics on 127.0.0.1:{port}: ") and "--metrics-addr" in line
    assert t.ch().execute("SELECT count() FROM events") == [(0,)]


@pytest.mark.single_slot("reads one pipeline's series; a worker's: tests/metrics/test_metrics_sharded.py")
def test_prometheus_scrapes_a_live_run_evaluates_the_alerts_and_promql_returns_the_delivered_count(
    migrated: Target, prometheus: PrometheusServer
) -> None:
    t = migrated
    run = LiveRun(t, *FAST, "--heartbeat-interval", "0.3")
    try:
        prometheus.scrape([run.address], wait=False)
        prometheus.load_rules(ALERTS)
        # A counter's rise counts from its first scrape: the dead letter must come after it, as it would in
        # production, where the run is scraped long before anything goes wrong.
        prometheus.wait_for(f'cdc_events_total{{instance="{run.address}", outcome="dead_letter"}}', timeout=60)
        with t.pg() as conn:
            for n in range(5):
                insert_events(conn, [f"prom-{n}-{r}" for r in range(5)])
            conn.execute("INSERT INTO outbox (unique_id, event_type) VALUES ('', 'no id')")  # a dead letter
        delivered = prometheus.wait_for(
            f'sum(cdc_events_total{{instance="{run.address}", outcome="stored"}})', lambda v: v == 25, timeout=60,
        )
        # The dead letter fires its alert (no `for`), labelled with the slot it came through.
        prometheus.wait_for('count(ALERTS{alertname="CdcDeadLetters", alertstate="firing", slot="cdc_outbox"})',
                            timeout=60)
        # Every rule of the file has been evaluated against the live series, without an error (an RFC 3339
        # time; year 1 until the first evaluation).
        wait_until(lambda: all(r["lastEvaluation"] > "2000" for r in _alert_rules(prometheus)), 30,
                   "every rule evaluated")
        rules = {r["name"]: r for r in _alert_rules(prometheus)}
        heartbeats = prometheus.wait_for(
            f'sum(cdc_heartbeat_latency_seconds_count{{instance="{run.address}"}})', lambda v: v >= 2, timeout=60,
        )
        slot = prometheus.query(f'cdc_info{{instance="{run.address}"}}')
        firing = {series["metric"]["alertname"]
                  for series in prometheus.query(f'ALERTS{{alertstate="firing", instance="{run.address}"}}')}
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    assert delivered == 25 and heartbeats >= 2
    assert [series["metric"]["slot"] for series in slot] == ["cdc_outbox"]
    assert set(rules) == set(re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(), re.MULTILINE))
    assert {name: r["health"] for name, r in rules.items()} == dict.fromkeys(rules, "ok"), rules
    # A healthy pipeline: the dead letter is the only thing wrong with it.
    assert firing == {"CdcDeadLetters"}, firing
    assert t.ch().execute("SELECT count() FROM events") == [(25,)]


def _alert_rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    groups = prometheus.rule_groups()
    return [rule for group in groups for rule in group["rules"] if rule["type"] == "alerting"]

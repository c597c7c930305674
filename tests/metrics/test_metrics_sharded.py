"""`cdc run --metrics-addr` on a sharded outbox: one endpoint per process covering every shard it streams,
in child processes or in threads, and `cdc top` reading it."""

from __future__ import annotations

import subprocess

import orjson
import pytest
from metrics_support import LiveRun, Samples
from support import CDC, Target, checked, insert_events, wait_until

FAST = ("--flush-interval", "0.2", "--status-interval", "0.5", "--heartbeat-interval", "0.3")


def stored_by_shard(samples: Samples) -> dict[tuple[str, str], float]:
    return {(dict(labels)["slot"], dict(labels)["shard"]): v for (name, labels), v in samples.items()
            if name == "cdc_events_total" and dict(labels)["outcome"] == "stored"}


@pytest.mark.parametrize("how", ["child processes", "threads"])
def test_one_endpoint_counts_every_shard_the_process_streams(pg_dsn: str, clickhouse_url: str, how: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    run = LiveRun(t, *FAST, *(["--shard-threads"] if how == "threads" else []))
    try:
        with t.pg() as conn:
            insert_events(conn, [f"m-{n}" for n in range(60)])
            rows = conn.execute("SELECT shard_hash % 4, count(*) FROM outbox GROUP BY 1").fetchall()
        expected = {(f"cdc_outbox_{k}", str(k)): float(n) for k, n in rows}
        assert len(expected) == 4, "60 ids should reach every one of 4 shards"
        wait_until(lambda: stored_by_shard(run.samples()) == expected, 90,
                   f"each shard's stored rows on the endpoint ({expected})")
        top = subprocess.run([*CDC, "top", "--once", "--json", "--interval", "0.3", "--metrics-addr", run.address],
                             capture_output=True, text=True, timeout=60)
        samples = run.samples()
    finally:
        code = run.stop()
    assert code == 0, run.tail()
    info = sorted(dict(labels)["shard"] for name, labels in samples if name == "cdc_info")
    assert info == ["0", "1", "2", "3"]
    for k in range(4):
        labels = (("shard", str(k)), ("slot", f"cdc_outbox_{k}"))
        assert samples[("cdc_clickhouse_errors_total", labels)] == 0
        assert samples[("cdc_commit_to_stored_seconds_count", labels)] == expected[(f"cdc_outbox_{k}", str(k))]
    assert top.returncode == 0, top.stderr
    frames = orjson.loads(top.stdout)
    assert sorted((f["slot"], f["shard"]) for f in frames) == sorted(expected)
    assert all(f["errors"] == 0 and f["buffer_rows"] == 0 for f in frames)
    assert t.ch().execute("SELECT count() FROM events") == [(60,)]

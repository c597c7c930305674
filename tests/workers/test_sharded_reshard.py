"""``cdc shards reshard M`` end to end, under a continuous writer: nothing lost, nothing twice.

The new generation starts at one LSN, P: the old slots are drained below it, the
new ones skip what came before it. The check is the usual one: exactly the
committed set in ClickHouse's progress ledger, deduplication off everywhere.
"""

from __future__ import annotations

import pytest

import time

import orjson
from shard_support import RUN, CdcProcess, Writer, delivered_exactly, streamed
from support import Target, checked, wait_until

NO_DEDUP = ("--dedup-window", "0")


def generations(t: Target) -> list[tuple[int, int, str]]:
    with t.pg() as conn:
        rows = conn.execute("SELECT generation, shards, state FROM cdc_shard_generations ORDER BY 1").fetchall()
    return [(int(g), int(n), str(s)) for g, n, s in rows]


@pytest.mark.soak  # a second reshard under load: test_reshard_an_unsharded_outbox_into_four_... is the normal run's
def test_reshard_four_to_eight_under_load_loses_and_repeats_nothing(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    writer = Writer(t, "r", seed="reshard-4-8", max_rows=15, rollback_every=6)
    workers = [CdcProcess(t, *RUN) for _ in range(2)]
    with delivered_exactly(t, writer, workers):
        wait_until(lambda: len(streamed(t)) == 4, 90, "4 shards streamed")
        time.sleep(2)
        result = checked(t.cdc("shards", "reshard", "8", "--yes", "--json", *NO_DEDUP, timeout=600))
        report = orjson.loads(result.stdout)
        wait_until(lambda: streamed(t) == {f"cdc_outbox_g2_{k}" for k in range(8)}, 90, "the 8 new shards streamed")
        time.sleep(2)
    assert report["from_shards"] == 4 and report["to_shards"] == 8 and report["generation"] == 2
    assert sorted(report["drained"]) == [f"cdc_outbox_{k}" for k in range(4)]
    assert generations(t) == [(2, 8, "active")]
    assert all(w.events("shard handed over") for w in workers)


@pytest.mark.single_slot("starts from an unsharded outbox")
def test_reshard_an_unsharded_outbox_into_four_while_the_application_writes(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    writer = Writer(t, "u", seed="reshard-1-4", max_rows=15, rollback_every=6)
    workers: list[CdcProcess] = []
    with delivered_exactly(t, writer, workers):
        time.sleep(1)
        checked(t.cdc(*RUN, "--until-lsn", "current"))  # the one slot delivers some; the writer goes on
        time.sleep(1)
        report = orjson.loads(checked(t.cdc("shards", "reshard", "4", "--yes", "--json", *NO_DEDUP)).stdout)
        workers += [CdcProcess(t, *RUN) for _ in range(2)]
        wait_until(lambda: len(streamed(t)) == 4, 90, "4 shards streamed")
        time.sleep(2)
    assert report["from_shards"] == 1 and report["generation"] == 1 and report["drained"] == ["cdc_outbox"]
    assert generations(t) == [(1, 4, "active")]

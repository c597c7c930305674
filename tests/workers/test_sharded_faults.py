"""Faults on sharded workers, end to end on real PostgreSQL and ClickHouse: nothing lost, nothing twice.

Every test ends by checking exactly the committed set in ClickHouse's progress
ledger (a duplicate shows there), with deduplication off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from servers import PgServer
from shard_support import (
    RUN, CdcProcess, Writer, delivered_exactly, lock_backend, owned_by, streamed,
)
from support import Target, checked, wait_until


@pytest.fixture
def sharded4(pg_dsn: str, clickhouse_url: str) -> Iterator[Target]:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    yield t


@pytest.mark.soak  # repeated kills; one kill -9 with the exact set: test_sharded_run.py
def test_random_kills_of_workers_deliver_exactly_the_committed_set(sharded4: Target) -> None:
    t, rng = sharded4, random.Random("sharded-kills")
    writer = Writer(t, "k", seed="sharded-kills", max_rows=20, rollback_every=6)
    workers = [CdcProcess(t, *RUN) for _ in range(2)]
    stored = 0
    with delivered_exactly(t, writer, workers):
        for _ in range(4):
            victim = workers.pop(rng.randrange(len(workers)))
            # Mid-stream: once it stores, after a random while (mid-batch, mid-INSERT, mid-acknowledgement).
            victim.wait_for("flushed", timeout=90)
            time.sleep(rng.uniform(0.0, 2.0))
            victim.kill()
            stored += sum(int(e["rows"]) for e in victim.events("flushed"))  # type: ignore[call-overload]
            # Restarted at once: the newcomer waits for the dead one's walsenders to let go.
            workers.append(CdcProcess(t, *RUN))
        time.sleep(2)
    assert stored > 0, "no killed worker stored anything: the kills proved nothing"
    assert writer.rolled_back


def test_a_terminated_lock_session_hands_its_shards_on_without_loss_or_duplicates(sharded4: Target) -> None:
    t = sharded4
    writer = Writer(t, "l", seed="lock-session", max_rows=20, rollback_every=6)
    workers = [CdcProcess(t, *RUN) for _ in range(2)]
    with delivered_exactly(t, writer, workers):
        wait_until(lambda: sorted(i for s in owned_by(t).values() for i in s) == [0, 1, 2, 3], 90, "4 shards owned")
        time.sleep(1)
        victim = workers[0]
        with t.pg() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (lock_backend(t, victim.pid),))
        victim.wait_for("lost the lock session: stopping every shard at once", timeout=30)
        wait_until(lambda: len(streamed(t)) == 4, 60, "all 4 shards streamed again")
        time.sleep(2)
    assert victim.events("worker joined")[-1] is not victim.events("worker joined")[0]


@pytest.mark.soak  # under load; the handover itself: test_worker_group.py::test_a_worker_joining_gets_its_share_...
def test_a_worker_joining_mid_stream_takes_shards_over_with_no_gap(sharded4: Target) -> None:
    t = sharded4
    writer = Writer(t, "j", seed="joining", max_rows=20, rollback_every=6)
    first = CdcProcess(t, *RUN)
    workers = [first]
    with delivered_exactly(t, writer, workers):
        wait_until(lambda: owned_by(t).get(first.pid) == [0, 1, 2, 3], 90, "one worker with all 4 shards")
        time.sleep(1)
        workers.append(CdcProcess(t, *RUN))
        wait_until(lambda: sorted(len(s) for s in owned_by(t).values()) == [2, 2], 90, "2 shards each")
        time.sleep(2)
        handed_over = len(first.events("shard handed over"))
    assert handed_over == 2
    assert not first.events("shard streamer ended; restarting it")


@pytest.mark.parametrize("mode", [pytest.param("fast", marks=pytest.mark.soak), "immediate"])
def test_postgres_restarts_under_sharded_workers_lose_and_repeat_nothing(
    sharded4: Target, pg_server: PgServer, mode: str
) -> None:
    if not pg_server.can_restart:
        pytest.skip("this PostgreSQL is not ours to restart")
    t = sharded4
    writer = Writer(t, "p", seed=f"sharded-restart-{mode}", max_rows=20, rollback_every=5)
    workers = [CdcProcess(t, *RUN) for _ in range(2)]
    with delivered_exactly(t, writer, workers):
        wait_until(lambda: len(streamed(t)) == 4, 90, "all 4 shards streamed")
        time.sleep(1)
        pg_server.restart(mode)
        for worker in workers:
            worker.wait_for("lost the lock session: stopping every shard at once", timeout=60)
        wait_until(lambda: len(streamed(t)) == 4, 90, "all 4 shards streamed after the restart")
        time.sleep(1)

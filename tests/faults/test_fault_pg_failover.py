"""PostgreSQL failover under load: the primary dies (immediate), the standby is promoted, cdc goes on by itself.

cdc is given a multi-host DSN (both servers, target_session_attrs=read-write)
and a failover slot made by `cdc migrate` (the default on 17+). The primary
names the standby in synchronized_standby_slots, so cdc never receives a
change the standby lacks; the synced slot on the standby may be behind what
cdc stored, and the high-water mark skips what is sent again (dedup is off
here, so it alone stands between the failover and duplicates).

Replication is asynchronous: a COMMIT the old primary acknowledged may never
reach the standby. That loss is PostgreSQL's, not cdc's; the truth after the
failover is the promoted server's outbox, and ClickHouse must hold exactly it.
"""

from __future__ import annotations

import time

import pytest
from fault_support import CdcProcess, Writer, assert_exactly, catch_up, outbox_ids
from servers.pg_standby import StandbyPair
from support import Target, checked

TUNING = (
    "--dedup-window", "0", "--retry-initial", "0.1", "--retry-max", "1", "--batch-rows", "2000",
    "--flush-interval", "0.2", "--status-interval", "0.5",
)
SLOT = "cdc_outbox"


@pytest.mark.single_slot("promotes with the one slot synced; doctor's sharded chain is tests/admin/test_doctor_ha.py")
def test_failover_under_load_ends_with_exactly_the_promoted_servers_rows(
    pg_standby: StandbyPair, clickhouse_url: str
) -> None:
    t = Target(pg_standby.multi_host_dsn(), clickhouse_url)
    checked(t.cdc("migrate"))
    writer = Writer(t, "f", seed="pg-failover", max_rows=20, rollback_every=5)
    run = CdcProcess(t, "run", *TUNING)
    writer.start()
    try:
        run.wait_for("flushed")
        # cdc moves the slot; once the standby's copy is persistent, it survives the promotion.
        pg_standby.wait_slot_synced(SLOT)
        time.sleep(0.5)
        before = writer.committed_count
        pg_standby.stop_primary("immediate")
        pg_standby.promote_standby()
        run.wait_for("replication connection lost, reconnecting", timeout=60)
        run.wait_for("streaming", timeout=60, count=2)
        # and the application keeps writing, now to the promoted server
        deadline = time.monotonic() + 30
        while writer.committed_count < before + 20 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        writer.stop()
    catch_up(t)
    code = run.stop()
    assert code == 0, run.tail()

    with t.pg() as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (pg_standby.standby.port,)
    survived = outbox_ids(t)
    assert set(survived) <= set(writer.committed)  # nothing rolled back or invented
    assert writer.committed_count >= before + 20, "the writer never committed on the promoted server"
    assert_exactly(t, survived)

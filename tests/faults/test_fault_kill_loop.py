"""SIGKILL ``cdc run`` over and over while the application keeps writing: nothing lost, nothing twice.

The kill moments come from a seeded RNG (CDC_FAULT_SEED), so they land anywhere:
during start-up, mid-batch, mid-INSERT, between an INSERT and its acknowledgement.
Each restart varies the batch size and turns deduplication on or off; with it
off, only the high-water mark stands between a restart and duplicates.
"""

from __future__ import annotations

import time

import pytest
from fault_support import (
    SEED, CdcProcess, Writer, assert_exactly, drain, fault_rng, outbox_ids, report, wait_slot_released,
)
from support import (
    Position, Target, acknowledged_before_stored, high_water_mark, parse_lsn_text, stored_positions, wait_until,
)


@pytest.mark.parametrize(
    "kills", [pytest.param(5, id="5-kills"), pytest.param(30, id="30-kills", marks=pytest.mark.soak)]
)
def test_random_kills_while_writing_deliver_exactly_the_committed_set(migrated: Target, kills: int) -> None:
    t = migrated
    rng = fault_rng(f"kill-loop-{kills}")
    writer = Writer(t, "k", seed=f"kill-loop-writer-{kills}", max_rows=30, rollback_every=6)
    writer.start()
    stored_between_kills = []
    # After each kill: what the slot confirmed, and what ClickHouse held.
    at_kills: list[tuple[int, Position | None]] = []
    try:
        for n in range(kills):
            run = CdcProcess(
                t, "run", "--batch-rows", str(rng.choice([300, 2_000, 10_000])), "--flush-interval", "0.1",
                "--status-interval", "0.5", "--dedup-window", "0" if n % 2 == 0 else "100000",
            )
            if n == kills - 1 and not any(stored_between_kills):
                # Every kill so far landed in start-up (a slow or busy machine): let this last run store a
                # batch first, so the kills still prove something about a run cut short mid-stream.
                wait_until(lambda: run.events("flushed") or run.proc.poll() is not None, 120, "a first flush")
            time.sleep(rng.uniform(0.4, 3.0))
            assert run.proc.poll() is None, f"cdc exited {run.proc.returncode} before kill {n + 1}:\n{run.tail()}"
            run.kill()
            stored_between_kills.append(sum(int(e["rows"]) for e in run.events("flushed")))  # type: ignore[call-overload]
            # A supervisor restarting at once may still find the dead run's
            # walsender holding the slot; it lets go as soon as the server sees
            # the socket close.
            wait_slot_released(t)
            confirmed = t.confirmed_lsn()
            assert confirmed is not None
            at_kills.append((parse_lsn_text(confirmed), high_water_mark(t)))
    finally:
        writer.stop()
    assert sum(stored_between_kills) > 0, "no run lived long enough to store anything: the kills proved nothing"
    assert writer.rolled_back, "the writer rolled nothing back: the test proved less than it claims"

    drain(t, "--dedup-window", "0", "--flush-interval", "0.1")

    assert sorted(outbox_ids(t)) == sorted(writer.committed), "the writer's bookkeeping disagrees with PostgreSQL"
    checked_rows = assert_exactly(t, writer.committed)
    ahead = acknowledged_before_stored(stored_positions(t), at_kills)
    assert not ahead, f"a killed run had acknowledged what ClickHouse did not hold: {ahead}"
    report(
        f"kill-loop-{kills}", seed=SEED, kills=kills, events_checked=checked_rows,
        rolled_back=len(writer.rolled_back), transactions=writer.transactions,
        runs_that_stored_something=sum(1 for n in stored_between_kills if n),
    )

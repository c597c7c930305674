"""Where shards stream: forked children and threads, started and stopped at once (no servers)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import structlog

from cdc.shards.layout import shards_of
from cdc.workers.runner import Exited, ForkRunner, ThreadRunner

SHARD = shards_of("s", "p", 1, 2)[1]


def waits_for_stop(shard: object, stop: threading.Event, abort: threading.Event) -> int:
    stop.wait(30)
    return 3 if abort.is_set() else 0


def reap_one(runner: ForkRunner | ThreadRunner, timeout: float = 20) -> Exited:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = runner.reap()
        if done:
            return done[0]
        time.sleep(0.01)
    raise AssertionError("the streamer did not end")


@pytest.mark.parametrize("kind", [ForkRunner, ThreadRunner])
def test_a_streamer_asked_to_stop_the_moment_it_starts_still_stops_cleanly(kind: type[ForkRunner]) -> None:
    runner = kind(waits_for_stop, structlog.get_logger())
    for _ in range(25):
        runner.start(SHARD)
        runner.stop(SHARD)
        assert reap_one(runner) == Exited(SHARD, 0)
    assert runner.running() == []


def test_a_second_stop_gives_up_and_kill_ends_a_child_at_once() -> None:
    def ignores_stop(shard: object, stop: threading.Event, abort: threading.Event) -> int:
        abort.wait(30)
        return 3 if abort.is_set() else 0

    runner = ForkRunner(ignores_stop, structlog.get_logger())
    runner.start(SHARD)
    time.sleep(0.3)
    runner.stop(SHARD)
    time.sleep(0.3)  # two signals at once are one signal
    runner.stop(SHARD)
    assert reap_one(runner).code == 3
    runner.start(SHARD)
    runner.kill(SHARD)
    assert reap_one(runner).code == -9


def test_a_child_dies_with_its_worker() -> None:
    read, write = os.pipe()
    worker = os.fork()
    if worker == 0:  # the worker: start a child, tell its pid, then die without a word
        os.close(read)
        runner = ForkRunner(waits_for_stop, structlog.get_logger())
        runner.start(SHARD)
        os.write(write, str(runner.running() and runner._children[SHARD.slot].pid).encode())
        os._exit(0)
    os.close(write)
    child = int(os.read(read, 32))
    os.waitpid(worker, 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"child {child} outlived its worker")

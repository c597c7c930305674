"""The worker group on real PostgreSQL, with several worker processes whose streamers hold their slots.

Who streams a slot is read from PostgreSQL (the walsender holding it); who owns it
from the advisory locks and ``cdc_workers``. The pipeline itself is tested with
the group in tests/workers/test_sharded_run.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from support import Target, checked, wait_until

HOLDER = [sys.executable, str(Path(__file__).with_name("holder_worker.py"))]


class Workers:
    def __init__(self, dsn: str, logs: Path) -> None:
        self.dsn = dsn
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as err:
            proc = subprocess.Popen([*HOLDER, self.dsn, name, *extra], stdout=subprocess.DEVNULL, stderr=err)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in (self.logs / f"{name}.log").read_bytes().splitlines()
                if line.startswith(b"{")]

    def events(self, name: str) -> list[str]:
        return [str(e["event"]) for e in self.log(name)]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(pg_dsn: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(pg_dsn, tmp_path)
    yield group
    group.stop_all()


def sharded(dsn: str, shards: int) -> None:
    checked(Target(dsn, "").cdc("migrate", "--shards", str(shards)))


def streamers(dsn: str) -> dict[str, str]:
    """slot -> name of the worker whose walsender streams it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.slot_name, a.application_name FROM pg_replication_slots s "
            "JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE a.application_name LIKE 'holder %'"
        ).fetchall()
    return {str(slot): str(app).removeprefix("holder ") for slot, app in rows}


def spread(dsn: str, shards: int) -> Counter[str] | None:
    """Shards per worker once every shard is streamed, else None."""
    now = streamers(dsn)
    return Counter(now.values()) if len(now) == shards else None


def alive_rows(dsn: str) -> dict[str, list[int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT worker_id, shards FROM cdc_workers w WHERE EXISTS (SELECT 1 FROM pg_locks l "
            "WHERE l.locktype = 'advisory' AND l.pid = w.backend_pid)").fetchall()
    return {str(w): sorted(s) for w, s in rows}


def test_three_workers_share_eight_shards_and_the_survivors_take_a_killed_ones(
    pg_dsn: str, workers: Workers
) -> None:
    sharded(pg_dsn, 8)
    for name in ("a", "b", "c"):
        workers.start(name)
    wait_until(lambda: (s := spread(pg_dsn, 8)) is not None and max(s.values()) <= 3 and len(s) == 3, 60,
               "8 shards streamed, at most 3 per worker")
    owners = streamers(pg_dsn)
    wait_until(lambda: all(len(v) == Counter(owners.values())[k] for k, v in alive_rows(pg_dsn).items()), 10,
               "cdc_workers to list each worker's shards")
    victim = owners["cdc_outbox_0"]
    orphaned = {slot for slot, name in owners.items() if name == victim}
    killed_at = time.monotonic()
    workers.procs[victim].send_signal(signal.SIGKILL)
    wait_until(lambda: (s := spread(pg_dsn, 8)) is not None and victim not in s and max(s.values()) <= 4, 60,
               "the survivors to stream all 8 shards, at most 4 each")
    taken_over = time.monotonic() - killed_at
    survivors = streamers(pg_dsn)
    assert set(survivors.values()) == set("abc") - {victim}
    assert {survivors[slot] for slot in orphaned} <= set("abc") - {victim}
    assert victim not in alive_rows(pg_dsn)
    print(f"takeover of {len(orphaned)} shards after kill -9: {taken_over:.1f}s")


def test_a_worker_joining_gets_its_share_by_handover_not_by_restart(pg_dsn: str, workers: Workers) -> None:
    sharded(pg_dsn, 8)
    workers.start("a")
    workers.start("b")
    wait_until(lambda: spread(pg_dsn, 8) == Counter({"a": 4, "b": 4}), 60, "4 shards each for a and b")
    workers.start("c")
    wait_until(lambda: (s := spread(pg_dsn, 8)) is not None and s["c"] >= 2 and max(s.values()) <= 3, 60,
               "c to get 2 or 3 shards, nobody above 3")
    for name in ("a", "b"):
        events = workers.events(name)
        assert "handing shard over" in events and "shard handed over" in events
        assert "shard streamer ended; restarting it" not in events
        released = [e for e in workers.log(name) if e["event"] == "released"]
        assert released and not any(e["aborted"] for e in released)


def test_a_terminated_lock_session_stops_that_workers_streamers_at_once(pg_dsn: str, workers: Workers) -> None:
    sharded(pg_dsn, 4)
    workers.start("a")
    workers.start("b")
    wait_until(lambda: spread(pg_dsn, 4) == Counter({"a": 2, "b": 2}), 60, "2 shards each")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (backend,) = conn.execute("SELECT backend_pid FROM cdc_workers WHERE worker_id = 'a'").fetchone()  # type: ignore[misc]
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
    wait_until(lambda: "lost the lock session: stopping every shard at once" in workers.events("a"), 20,
               "a to notice it lost its locks")
    wait_until(lambda: (s := spread(pg_dsn, 4)) is not None and max(s.values()) <= 2 and len(s) == 2, 60,
               "all 4 shards streamed again by a (rejoined) and b")
    assert workers.procs["a"].poll() is None
    lost_at = next(i for i, e in enumerate(workers.events("a")) if e.startswith("lost the lock session"))
    assert "worker joined" in workers.events("a")[lost_at:]


def test_max_shards_caps_a_worker_and_another_takes_the_rest(pg_dsn: str, workers: Workers) -> None:
    sharded(pg_dsn, 4)
    workers.start("a", "--max-shards", "1")
    workers.start("b")
    wait_until(lambda: spread(pg_dsn, 4) == Counter({"a": 1, "b": 3}), 60, "1 shard for a, 3 for b")


def test_sigterm_hands_every_shard_over_and_leaves_the_group(pg_dsn: str, workers: Workers) -> None:
    sharded(pg_dsn, 4)
    workers.start("a", "--threads")
    workers.start("b")
    wait_until(lambda: spread(pg_dsn, 4) == Counter({"a": 2, "b": 2}), 60, "2 shards each")
    workers.procs["a"].send_signal(signal.SIGTERM)
    assert workers.procs["a"].wait(30) == 0
    assert workers.events("a")[-1] == "worker left"
    wait_until(lambda: spread(pg_dsn, 4) == Counter({"b": 4}), 30, "b to stream all 4")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT worker_id FROM cdc_workers").fetchall() == [("b",)]


def test_shards_show_names_each_shards_owner_streamer_and_lag(pg_dsn: str, clickhouse_url: str,
                                                             workers: Workers) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    workers.start("a")
    workers.start("b")
    wait_until(lambda: spread(pg_dsn, 4) == Counter({"a": 2, "b": 2}), 60, "2 shards each")
    owners = streamers(pg_dsn)
    report = orjson.loads(checked(t.cdc("shards", "show", "--json")).stdout)
    assert report["sharded"] is True and report["clickhouse_error"] is None
    assert {s["slot"]: s["owner"] for s in report["shards"]} == owners
    assert all(s["streaming_pid"] and isinstance(s["lag_bytes"], int) for s in report["shards"])
    assert sorted((w["worker_id"], w["alive"], len(w["shards"])) for w in report["workers"]) == [
        ("a", True, 2), ("b", True, 2)]
    text = checked(t.cdc("shards", "show")).stdout
    assert "cdc_outbox_3" in text and "worker" in text


@pytest.mark.single_slot("starts from an unsharded outbox")
def test_shards_show_on_an_unsharded_outbox_shows_its_one_slot(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    report = orjson.loads(checked(t.cdc("shards", "show", "--json")).stdout)
    assert report["sharded"] is False
    assert [(s["slot"], s["stream"], s["shard"]) for s in report["shards"]] == [("cdc_outbox", 0, "unsharded")]

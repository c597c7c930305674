"""Resharding's coordination on real PostgreSQL under a continuous writer, with workers whose streamers hold slots.

The drain hook here consumes the old slots with SQL (pg_logical_slot_get_binary_changes),
so that the test sees exactly which transactions each side of the boundary P holds:
everything committed before P is in the old generation's slots, everything from P on
in the new one's, every committed row exactly once. The pipeline's own drain and
floor are tested end to end in tests/workers/test_sharded_run.py.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support import Target, checked, insert_events, wait_until
from test_worker_group import Workers, spread

from cdc.logs import get_logger
from cdc.pgoutput import decode
from cdc.pgoutput.messages import Begin, Insert, Relation
from cdc.settings import Settings
from cdc.shards import ShardError
from cdc.shards.layout import Shard, lock_key, reshard_key
from cdc.admin.reshard import Resharder


class Writer(threading.Thread):
    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.committed: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            n = 0
            while not self.halt.is_set():
                ids = [f"w-{n}-{i}" for i in range(1 + n % 5)]
                insert_events(conn, ids)
                self.committed.extend(ids)
                n += 1
                self.halt.wait(0.005)


def changes(conn: psycopg.Connection[tuple[object, ...]], shard: Shard, *, consume: bool) -> list[tuple[int, str]]:
    """(commit LSN, unique_id) of every row the slot sends now."""
    function = "pg_logical_slot_get_binary_changes" if consume else "pg_logical_slot_peek_binary_changes"
    rows = conn.execute(
        f"SELECT data FROM {function}(%s, NULL, NULL, 'proto_version', '1', 'publication_names', %s)",
        (shard.slot, shard.publication),
    ).fetchall()
    out: list[tuple[int, str]] = []
    commit, column = 0, 0
    for (data,) in rows:
        message = decode(bytes(data))  # type: ignore[arg-type]
        if isinstance(message, Begin):
            commit = message.final_lsn
        elif isinstance(message, Relation):
            column = [c.name for c in message.columns].index("unique_id")
        elif isinstance(message, Insert):
            out.append((commit, bytes(message.new[column]).decode()))  # type: ignore[arg-type]
    return out


class SqlDrain:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prepared = 0
        self.drained: dict[str, int] = {}
        self.rows: list[str] = []

    def prepare_sink(self) -> None:
        self.prepared += 1

    def drain(self, shard: Shard, until: int) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            got = changes(conn, shard, consume=True)
        self.drained[shard.slot] = until
        self.rows.extend(uid for commit, uid in got if commit < until)


@pytest.fixture
def workers(pg_dsn: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(pg_dsn, tmp_path)
    yield group
    group.stop_all()


def test_reshard_two_to_four_under_load_splits_every_committed_row_at_one_lsn(pg_dsn: str, workers: Workers) -> None:
    checked(Target(pg_dsn, "").cdc("migrate", "--shards", "2"))
    workers.start("a")
    workers.start("b")
    wait_until(lambda: spread(pg_dsn, 2) == Counter({"a": 1, "b": 1}), 60, "one shard each")
    writer = Writer(pg_dsn)
    writer.start()
    wait_until(lambda: len(writer.committed) > 200, 30, "the writer to commit")
    hooks = SqlDrain(pg_dsn)
    report = Resharder(Settings(pg_dsn=pg_dsn), hooks, get_logger()).run(4)
    wait_until(lambda: spread(pg_dsn, 4) == Counter({"a": 2, "b": 2}), 60, "the new generation, 2 shards each")
    wait_until(lambda: len(writer.committed) > len(hooks.rows) + 200, 30, "more commits after the reshard")
    writer.halt.set()
    writer.join(30)
    assert report.from_shards == 2 and report.to_shards == 4 and report.generation == 2
    assert sorted(hooks.drained) == ["cdc_outbox_0", "cdc_outbox_1"] and hooks.prepared == 1
    workers.stop_all()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (start,) = conn.execute(
            "SELECT starts_at::text FROM cdc_shard_generations WHERE state = 'active'").fetchone()  # type: ignore[misc]
        assert start == report.starts_at
        assert conn.execute("SELECT generation FROM cdc_shard_generations").fetchall() == [(2,)]
        slots = sorted(r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall())
        assert slots == [f"cdc_outbox_g2_{k}" for k in range(4)]
        p = next(iter(set(hooks.drained.values())))
        later: list[str] = []
        for shard in (Shard(2, k, 4, f"cdc_outbox_g2_{k}", f"cdc_outbox_g2_{k}", 200 + k) for k in range(4)):
            sent = changes(conn, shard, consume=False)
            later.extend(uid for commit, uid in sent if commit >= p)
            mine = {uid for _, uid in sent}
            if mine:
                hashed = conn.execute("SELECT DISTINCT shard_hash %% 4 FROM outbox WHERE unique_id = ANY(%s)",
                                      (list(mine),)).fetchall()
                assert hashed == [(shard.index,)]
    assert hooks.rows and later, "both sides of the boundary should hold rows under load"
    delivered = Counter(hooks.rows + later)
    assert not [uid for uid, n in delivered.items() if n > 1], "a row on both sides of P"
    assert sorted(delivered) == sorted(writer.committed)
    for name in ("a", "b"):
        assert "shard handed over" in workers.events(name)


def test_a_second_reshard_at_the_same_time_is_refused(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate", "--shards", "2"))
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (reshard_key("cdc_outbox"),))
        with pytest.raises(ShardError, match="another `cdc shards reshard` is running"):
            Resharder(Settings(pg_dsn=pg_dsn), SqlDrain(pg_dsn), get_logger()).run(4)


@pytest.mark.single_slot("starts from an unsharded outbox")
def test_an_unsharded_slot_in_use_is_not_resharded_and_nothing_changes(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE hold (x int)")
    holder = psycopg.connect(pg_dsn + "?replication=database", autocommit=True)
    try:
        holder.pgconn.exec_(b"START_REPLICATION SLOT cdc_outbox LOGICAL 0/0 (proto_version '1', "
                            b"publication_names 'cdc_outbox')")
        with pytest.raises(ShardError, match=r"cdc_outbox is in use by process \d+ .* stop it, reshard"):
            Resharder(Settings(pg_dsn=pg_dsn), SqlDrain(pg_dsn), get_logger(),
                      handover_timeout=5).run(4)
    finally:
        holder.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()] == ["cdc_outbox"]
        assert conn.execute("SELECT count(*) FROM cdc_shard_generations").fetchone() == (0,)


def generations(dsn: str) -> list[tuple[int, int, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT generation, shards, state FROM cdc_shard_generations ORDER BY 1").fetchall()
    return [(int(g), int(n), str(s)) for g, n, s in rows]  # type: ignore[call-overload]


def slot_names(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return sorted(str(r[0]) for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall())


def test_a_shard_its_worker_will_not_hand_over_stops_the_reshard_before_a_second_generation(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate", "--shards", "2"))
    with psycopg.connect(pg_dsn, autocommit=True) as stuck:
        # A worker that keeps shard 1's lock (hung, or of another version): the two generations would overlap.
        stuck.execute("SELECT pg_advisory_lock(%s)", (lock_key("cdc_outbox_1"),))
        with pytest.raises(ShardError, match=r"did not hand over cdc_outbox_1 within 1s: nothing was changed"):
            Resharder(Settings(pg_dsn=pg_dsn), SqlDrain(pg_dsn), get_logger(), handover_timeout=1).run(4)
    assert generations(pg_dsn) == [(1, 2, "active")]
    assert slot_names(pg_dsn) == ["cdc_outbox_0", "cdc_outbox_1"]


class InterruptedDrain(SqlDrain):
    """Drains the first old slot, then stops as a killed `cdc shards reshard` would."""

    def drain(self, shard: Shard, until: int) -> None:
        if self.drained:
            raise RuntimeError("interrupted")
        super().drain(shard, until)


def test_a_reshard_interrupted_mid_drain_is_finished_by_the_next_one_with_every_row_once(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate", "--shards", "2"))
    before, after = [f"b-{i}" for i in range(40)], [f"a-{i}" for i in range(40)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        insert_events(conn, before)
    first = InterruptedDrain(pg_dsn)
    with pytest.raises(RuntimeError, match="interrupted"):
        Resharder(Settings(pg_dsn=pg_dsn), first, get_logger()).run(4)
    assert generations(pg_dsn) == [(1, 2, "draining"), (2, 4, "active")]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        insert_events(conn, after)
    second = SqlDrain(pg_dsn)
    report = Resharder(Settings(pg_dsn=pg_dsn), second, get_logger()).run(4)
    assert report.generation == 2 and sorted(second.drained) == ["cdc_outbox_0", "cdc_outbox_1"]
    assert generations(pg_dsn) == [(2, 4, "active")]
    assert slot_names(pg_dsn) == [f"cdc_outbox_g2_{k}" for k in range(4)]
    p = next(iter(first.drained.values()))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        later = [uid for k in range(4) for commit, uid in changes(
            conn, Shard(2, k, 4, f"cdc_outbox_g2_{k}", f"cdc_outbox_g2_{k}", 200 + k), consume=False) if commit >= p]
    delivered = Counter(first.rows + second.rows + later)
    assert not [uid for uid, n in delivered.items() if n > 1], "a row on both sides of P"
    assert sorted(delivered) == sorted(before + after)


class SlowWalsenderDrain(SqlDrain):
    """Acknowledges ``until`` over a replication stream whose walsender is stopped (SIGSTOP) as the
    stream ends, and let go a second later: the acknowledgement reaches the slot after the drain returns."""

    def drain(self, shard: Shard, until: int) -> None:
        stream = psycopg.connect(self.dsn + "?replication=database", autocommit=True)
        stream.pgconn.exec_(f"START_REPLICATION SLOT {shard.slot} LOGICAL 0/0 (proto_version '1', "
                            f"publication_names '{shard.publication}')".encode())
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            wait_until(lambda: conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                            (shard.slot,)).fetchone() != (None,), 10, "the walsender")
            (pid,) = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                  (shard.slot,)).fetchone()  # type: ignore[misc]
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (pid, signal.SIGCONT)).start()
        now = int((time.time() - 946684800) * 1_000_000)  # microseconds since 2000-01-01, as the protocol counts
        stream.pgconn.put_copy_data(b"r" + struct.pack("!QQQqB", until, until, until, now, 0))
        stream.pgconn.flush()
        stream.close()
        self.drained[shard.slot] = until


def test_a_drain_whose_last_acknowledgement_reaches_the_slot_late_still_finishes_the_reshard(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate", "--shards", "2"))
    report = Resharder(Settings(pg_dsn=pg_dsn), SlowWalsenderDrain(pg_dsn), get_logger()).run(3)
    assert report.generation == 2
    assert generations(pg_dsn) == [(2, 3, "active")]
    assert slot_names(pg_dsn) == [f"cdc_outbox_g2_{k}" for k in range(3)]

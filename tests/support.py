"""Helpers for tests that drive the real ``cdc`` command against real servers."""

from __future__ import annotations

import bisect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from clickhouse_driver import Client

CDC = [sys.executable, "-m", "cdc"]

# CDC_TEST_SHARDS=N (N > 1): every `cdc migrate` the tests run splits the outbox into N shards (CDC_SHARDS),
# and the slot helpers below read slot S as its shards' slots S_0..S_{N-1} when S itself does not exist: the
# existing suite run sharded, where it applies (issue 11).
TEST_SHARDS = int(os.environ.get("CDC_TEST_SHARDS") or "1")

# The slot named, or (sharded) its shards' slots: pg_replication_slots rows a helper reads.
SLOTS = ("FROM pg_replication_slots WHERE slot_name = %(slot)s OR (%(sharded)s AND slot_name ~ ('^' || %(slot)s || "
        "'_[0-9]+$') AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %(slot)s))")


def slot_args(slot: str, **more: object) -> dict[str, object]:
    return {"slot": slot, "sharded": TEST_SHARDS > 1, **more}


@dataclass(frozen=True)
class Target:
    pg_dsn: str
    clickhouse_url: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
        env.update(CDC_PG_DSN=self.pg_dsn, CDC_CLICKHOUSE_URL=self.clickhouse_url, CDC_LOG_FORMAT="json")
        if TEST_SHARDS > 1:
            env.update(CDC_SHARDS=str(TEST_SHARDS))
        env.update(extra)
        return env

    def cdc(self, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CDC, *args], env=self.env(**extra_env), capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CDC, *args], env=self.env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def pg(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.pg_dsn, autocommit=True)

    def ch(self) -> Client | ChdbReader:
        if urlsplit(self.clickhouse_url.strip()).scheme.lower() == "chdb":  # as cdc reads the scheme
            return ChdbReader(self.clickhouse_url.strip())
        return Client.from_url(self.clickhouse_url)

    def current_lsn(self) -> str:
        with self.pg() as conn:
            return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]

    def confirmed_lsn(self, slot: str = "cdc_outbox") -> str | None:
        """The slot's confirmed position (sharded: the least of its shards')."""
        with self.pg() as conn:
            row = conn.execute(f"SELECT min(confirmed_flush_lsn)::text {SLOTS}", slot_args(slot)).fetchone()
            return None if row is None else row[0]  # type: ignore[return-value]

    def slot_reached(self, lsn: str, slot: str = "cdc_outbox") -> bool:
        with self.pg() as conn:
            row = conn.execute(f"SELECT bool_and(confirmed_flush_lsn >= %(lsn)s::pg_lsn) {SLOTS}",
                               slot_args(slot, lsn=lsn)).fetchone()
            return bool(row and row[0])

    def slot_active(self, slot: str = "cdc_outbox") -> bool:
        """Sharded: any of its shards' slots."""
        with self.pg() as conn:
            row = conn.execute(f"SELECT bool_or(active) {SLOTS}", slot_args(slot)).fetchone()
            return bool(row and row[0])

    def delivered_ids(self, table: str = "events") -> list[str]:
        """Every row ever inserted into the events table, duplicates included.

        Read from the progress ledger (a plain MergeTree fed by the same INSERT):
        the events table is a ReplacingMergeTree whose merges would hide duplicates.
        Position marks (unique_id '') are not events.
        """
        return [r[0] for r in self.ch().execute(f"SELECT unique_id FROM {table}_cdc_progress WHERE unique_id != ''")]


class ChdbReader:
    """Reads a chdb:// sink's directory like clickhouse-driver's Client reads a server: ``execute`` gives rows.

    Straight through chDB and Arrow, none of cdc's code. The directory is opened
    for each statement and closed after it: chDB lets one process at a time have
    it (so never while a ``cdc run`` child does), and this process one directory.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.database = dict(parse_qsl(parts.query)).get("database", "default")

    def execute(self, query: str, params: dict[str, object] | None = None) -> list[tuple[Any, ...]]:
        import chdb
        import pyarrow as pa

        assert not params, "ChdbReader takes no parameters"
        connect: Any = chdb.connect  # untyped
        conn = connect(self.path)
        try:
            conn.query(f"USE {self.database}")
            data = conn.query(query, "Arrow").bytes()
        finally:
            conn.close()
        if not data:
            return []
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        return list(zip(*(column.to_pylist() for column in table.columns)))

    def disconnect(self) -> None:
        pass


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    return result


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def drop_slot_once_released(conn: psycopg.Connection[Any], slot: str, timeout: float = 10.0) -> None:
    """Drop ``slot`` once no walsender holds it: a client's walsender exits a moment after the client is gone."""
    wait_until(lambda: conn.execute(
        "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone() == (False,), timeout=timeout, what=f"the walsender to let go of slot {slot}", interval=0.05)
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"cdc did not stop within {timeout}s:\n{err[-4000:]}") from None
    return proc.returncode, err


def insert_events(
    conn: psycopg.Connection[tuple[object, ...]], ids: Sequence[str], *, event_type: str = "test", rollback: bool = False
) -> None:
    """One transaction inserting one outbox row per id."""
    with conn.transaction(force_rollback=rollback):
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO outbox (unique_id, event_type, environment, payload) VALUES (%s, %s, 'test', %s)",
                [(uid, event_type, f'{{"uid": "{uid}"}}') for uid in ids],
            )


# -- acknowledgement order: the slot's confirmed position against what ClickHouse holds -------------------------

Position = tuple[int, int]  # (commit_lsn, commit_seq) as stored in ClickHouse


def parse_lsn_text(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def stored_positions(t: Target, table: str = "events") -> list[tuple[int, int, int]]:
    """(commit_lsn, commit_seq, inserted_at) of every stored event, in commit order, from the progress ledger."""
    rows = t.ch().execute(
        f"SELECT commit_lsn, commit_seq, toUInt32(inserted_at) FROM {table}_cdc_progress "
        "WHERE unique_id != '' ORDER BY commit_lsn, commit_seq"
    )
    return [(int(lsn), int(seq), int(at)) for lsn, seq, at in rows]


def high_water_mark(t: Target, table: str = "events") -> Position | None:
    """The newest stored position, read straight from ClickHouse (not through cdc)."""
    rows = t.ch().execute(
        f"SELECT commit_lsn, commit_seq FROM {table}_cdc_progress WHERE unique_id != '' "
        "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT 1"
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def acknowledged_before_stored(
    final: Sequence[tuple[int, int, int]], samples: Sequence[tuple[int, Position | None]]
) -> list[str]:
    """Samples where the slot confirmed a transaction ClickHouse did not hold yet.

    ``final`` is every position stored by the end of the test (``stored_positions``);
    each sample is (the slot's confirmed_flush_lsn, the high-water mark read *after*
    it). Rows are inserted in commit order, so at that moment ClickHouse held exactly
    the positions up to the mark. The server skips, on restart, every transaction
    whose commit record starts before the confirmed position: a row past the mark
    whose commit_lsn lies below the confirmed position was acknowledged unstored.
    """
    positions = [(lsn, seq) for lsn, seq, _ in final]
    bad = []
    for confirmed, mark in samples:
        at = 0 if mark is None else bisect.bisect_right(positions, mark)
        first_unstored = positions[at] if at < len(positions) else None
        if first_unstored is not None and first_unstored[0] < confirmed:
            bad.append(
                f"confirmed {confirmed:X} while ClickHouse held up to {mark} and not yet "
                f"commit {first_unstored[0]:X} #{first_unstored[1]}"
            )
    return bad


def slot_released(t: Target, slot: str = "cdc_outbox", timeout: float = 30) -> None:
    """After a kill the server ends the dead run's walsender once it sees the socket close."""

    def released() -> bool:
        with t.pg() as conn:
            row = conn.execute(f"SELECT bool_or(active) {SLOTS}", slot_args(slot)).fetchone()
        return row is None or not row[0]

    wait_until(released, timeout, "the killed run's walsender to release the slot", 0.05)


class CommitReferee:
    """PostgreSQL's own account of which transactions committed where: a test_decoding slot, nothing of cdc.

    Create it before the transactions it is to see. ``commits()`` gives each
    committed transaction's xid and the end of its commit record; the outbox
    rows' ``xmin`` says which transaction wrote them.
    """

    SLOT = "cdc_test_referee"

    def __init__(self, t: Target) -> None:
        self.t = t
        with t.pg() as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (self.SLOT,))

    def commits(self) -> dict[str, int]:
        with self.t.pg() as conn:
            rows = conn.execute(
                "SELECT xid::text, lsn::text FROM pg_logical_slot_peek_changes(%s, NULL, NULL, "
                "'include-xids', '1', 'skip-empty-xacts', '1') WHERE data LIKE 'COMMIT%%'",
                (self.SLOT,),
            ).fetchall()
        return {str(xid): parse_lsn_text(str(lsn)) for xid, lsn in rows}

    def outbox_ids_by_xid(self) -> dict[str, set[str]]:
        by_xid: dict[str, set[str]] = {}
        with self.t.pg() as conn:
            for uid, xid in conn.execute("SELECT unique_id, xmin::text FROM outbox").fetchall():
                by_xid.setdefault(str(xid), set()).add(str(uid))
        return by_xid

    def acknowledged_unstored(self, confirmed: int, stored: set[str]) -> list[str]:
        """Committed transactions the slot confirmed (their commit ends at or before ``confirmed``) that
        ClickHouse did not hold whole: the server will never send them again."""
        commits = self.commits()
        return [
            f"transaction {xid} (commit ends at {commits[xid]:X}, {len(ids - stored)} of {len(ids)} rows unstored)"
            f" confirmed by {confirmed:X}"
            for xid, ids in self.outbox_ids_by_xid().items()
            if xid in commits and commits[xid] <= confirmed and not ids <= stored
        ]

    def drop(self) -> None:
        with self.t.pg() as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (self.SLOT,),
            )

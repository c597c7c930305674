"""What ``cdc demo`` shows while events flow: the `cdc run` child's own log, read as it is written, and the slot.

The child logs JSON lines; each ``flushed`` line says how many events a batch
stored. The slot says how far behind the server's WAL the acknowledged
position is. Together: events stored, events per second, and the lag.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

_RATE_WINDOW = 3.0  # seconds of history behind the events/s figure


class RunLog:
    """Follows the child's log file: counts stored events, keeps the last lines for a failure report."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stored = 0
        self.dead_letters = 0
        self.done: dict[str, Any] | None = None  # the child's last line, once it ends cleanly
        self.tail: deque[str] = deque(maxlen=20)
        self._offset = 0
        self._partial = b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._take(line)

    def _take(self, line: bytes) -> None:
        text = line.decode(errors="replace").strip()
        if not text:
            return
        self.tail.append(text)
        try:
            entry = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if not isinstance(entry, dict):
            return
        if entry.get("event") == "flushed":
            self.stored += int(entry.get("rows", 0))
            self.dead_letters += int(entry.get("dead_letters", 0))
        elif entry.get("event") == "done":
            self.done = entry


@dataclass(frozen=True)
class Snapshot:
    committed: int  # distinct events the load committed so far
    stored: int  # events the child stored
    rate: float  # stored events per second, lately
    wal_behind: int | None  # bytes of WAL between the server's position and the slot's acknowledged one


class Gauge:
    """Turns successive counts into a rate, and asks PostgreSQL for the slot's lag."""

    def __init__(self, dsn: str, slot: str) -> None:
        self._dsn = dsn
        self._slot = slot
        self._history: deque[tuple[float, int]] = deque()
        self._conn: psycopg.Connection[Any] | None = None

    def read(self, committed: int, stored: int) -> Snapshot:
        now = time.monotonic()
        self._history.append((now, stored))
        while len(self._history) > 2 and now - self._history[0][0] > _RATE_WINDOW:
            self._history.popleft()
        first_at, first = self._history[0]
        rate = (stored - first) / (now - first_at) if now > first_at else 0.0
        return Snapshot(committed, stored, rate, self.wal_behind())

    def wal_behind(self) -> int | None:
        try:
            if self._conn is None:
                self._conn = psycopg.connect(self._dsn, autocommit=True, application_name="cdc-demo-gauge")
            row = self._conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s", (self._slot,),
            ).fetchone()
        except psycopg.Error:
            self.close()  # shown as unknown; the next read connects again
            return None
        return None if row is None or row[0] is None else int(row[0])

    def slot_reached(self, lsn: str) -> bool:
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (lsn, self._slot),
                ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def describe(snapshot: Snapshot) -> str:
    behind = max(snapshot.committed - snapshot.stored, 0)
    wal = "?" if snapshot.wal_behind is None else _size(snapshot.wal_behind)
    return (f"committed {snapshot.committed:>9,}   stored {snapshot.stored:>9,}   {snapshot.rate:>8,.0f} events/s   "
            f"lag {behind:>7,} events, {wal} of WAL")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1024:
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"

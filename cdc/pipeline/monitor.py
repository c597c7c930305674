"""The monitor thread: the slot's lag every status interval, a heartbeat every heartbeat interval.

Both need an ordinary SQL connection of their own (the replication connection
is in COPY mode). The thread never stops the pipeline: when PostgreSQL is
away it says so once and tries again; when the role may not emit logical
decoding messages it says so once and goes on measuring the lag without
heartbeats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from structlog.typing import FilteringBoundLogger

from ..metrics import PipelineMetrics, heartbeat
from ..pg.connect import Conn as Connection
from ..pg.connect import describe
from ..pg.monitor import GRANT_HINT, MESSAGES_SINCE, emit_message, slot_lag


class SlotMonitor:
    """Start it once the slot exists; ``close()`` stops it and closes its connection."""

    def __init__(
        self, *, connect: Callable[[], Connection], slot: str, metrics: PipelineMetrics, log: FilteringBoundLogger,
        status_interval: float, heartbeat_interval: float,
    ) -> None:
        self._connect = connect
        self._slot = slot
        self._metrics = metrics
        self._log = log
        self._status_interval = status_interval
        self._heartbeat_interval = heartbeat_interval
        self._stop = threading.Event()
        self._conn: Connection | None = None
        self._away = False  # said that PostgreSQL is away, not yet that it is back
        self._thread = threading.Thread(target=self._run, name="cdc-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        next_lag = next_beat = time.monotonic()
        # The first heartbeat after one interval: a short run (--until-lsn) writes none.
        next_beat += self._heartbeat_interval
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_lag:
                    next_lag = now + self._status_interval
                    self._with_connection(self._read_lag)
                if self._heartbeat_interval > 0 and now >= next_beat:
                    next_beat = now + self._heartbeat_interval
                    self._with_connection(self._beat)
                due = min(next_lag, next_beat) if self._heartbeat_interval > 0 else next_lag
                self._stop.wait(max(0.0, due - time.monotonic()))
        finally:
            if self._conn is not None:
                self._conn.close()

    def _with_connection(self, work: Callable[[Connection], None]) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
                self._check_server(self._conn)
            work(self._conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            self._no_heartbeats(f"the role may not emit logical decoding messages ({describe(exc)}): "
                                + GRANT_HINT.format(role=self._role()))
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            self._no_heartbeats(f"the server will not write them ({describe(exc)})")
        except Exception as exc:  # noqa: BLE001 - the monitor reports, it never ends the run
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if not self._away:
                self._away = True
                self._log.warning("monitor cannot reach PostgreSQL, will try again", error=describe(exc))
            return
        if self._away:
            self._away = False
            self._log.info("monitor reconnected to PostgreSQL")

    def _check_server(self, conn: Connection) -> None:
        if self._heartbeat_interval > 0 and conn.info.server_version < MESSAGES_SINCE:
            self._no_heartbeats("they need PostgreSQL 14 or newer (pgoutput's messages option)")

    def _role(self) -> str:
        return "<role>" if self._conn is None else str(self._conn.info.user)

    def _no_heartbeats(self, why: str) -> None:
        if self._heartbeat_interval > 0:
            self._heartbeat_interval = 0.0
            self._metrics.heartbeat.disable()
            self._log.warning(f"heartbeats are off: {why}")

    def _read_lag(self, conn: Connection) -> None:
        lag = slot_lag(conn, self._slot)
        self._metrics.slot_lag(None if lag is None else lag.lag_bytes, None if lag is None else lag.safe_wal_bytes)

    def _beat(self, conn: Connection) -> None:
        now = time.time()
        emit_message(conn, heartbeat.PREFIX, heartbeat.payload(self._slot, now))
        if self._metrics.heartbeat.interval != self._heartbeat_interval:
            self._metrics.heartbeat.enable(self._heartbeat_interval, now)

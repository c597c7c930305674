"""What the server is told: the LSN up to which everything is stored, held back by the replay window.

A standby status update reports that LSN as written, flushed and applied, so
the slot frees the WAL before it. It goes out when the LSN changes, every
``status_interval`` seconds, or when forced (the server asked, or a batch is
waiting for the flusher); never while no replication connection is attached
(the initial copy, a reconnect, a backfill).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from ..core.tracker import AckTracker
from ..pg.replication import ReplicationConnection, StreamEnded
from .retain import Retention

_PING_INTERVAL = 0.5  # at most this often, ask an idle server where it is (see ``ping``)


class Acknowledger:
    def __init__(
        self, tracker: AckTracker, retention: Retention, status_interval: float, *,
        on_ack: Callable[[int], None] | None = None,
    ) -> None:
        self._tracker = tracker
        self._on_ack = on_ack  # told each new position sent (the metrics)
        self._retention = retention
        self._interval = status_interval
        self._repl: ReplicationConnection | None = None
        self._sent = -1
        self._last_status = 0.0
        self._last_ping = 0.0

    def attach(self, repl: ReplicationConnection) -> None:
        """Report on ``repl`` from now on; its first update always goes out."""
        self._repl = repl
        self._sent = -1

    def close(self) -> None:
        """Close the attached connection, if any: nothing is reported until the next ``attach``."""
        if self._repl is not None:
            self._repl.close()
            self._repl = None

    def send(self, *, force: bool = False) -> None:
        """Tell the server what is stored: when it changed, every status_interval, or when forced."""
        repl = self._repl
        if repl is None:
            return
        now = time.monotonic()
        ack = self._retention.held(self._tracker.safe_lsn, now)
        if force or ack != self._sent or now - self._last_status >= self._interval:
            repl.send_status(ack)
            if ack != self._sent and self._on_ack is not None:
                self._on_ack(ack)
            self._sent = ack
            self._last_status = now

    def send_forced(self) -> None:
        self.send(force=True)

    def send_if_connected(self) -> None:
        """``send_forced``, but a lost connection only ends the reporting (while the last batches are stored)."""
        try:
            self.send(force=True)
        except StreamEnded:
            self._repl = None

    def ping(self, now: float) -> None:
        """Report, and ask for the server's position: its keepalive answer lets an idle slot catch up."""
        if self._repl is not None and now - self._last_ping > _PING_INTERVAL:
            self._last_ping = now
            self._repl.send_status(self._retention.held(self._tracker.safe_lsn, now), reply=True)

    def final(self, log: FilteringBoundLogger) -> None:
        """The last report, after everything is stored; then the connection is closed."""
        if self._repl is None:
            return
        try:
            self._repl.send_status(self._retention.held(self._tracker.safe_lsn, time.monotonic()))
        except StreamEnded:
            log.warning("could not send the final acknowledgement; the slot resumes from the previous one")
        self._repl.close()
        self._repl = None

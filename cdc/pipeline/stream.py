"""One slot's stream across connections: connect, run a session, and after a lost connection reconnect.

The server re-sends everything not acknowledged, so a reconnect first stores
what is held and then skips it when it comes again. A server that refuses to
stream (an error with a SQLSTATE) ends the run; a connection that drops, or a
server that is restarting, is retried with backoff, forever at the cap.
"""

from __future__ import annotations

from dataclasses import asdict

from ..core.handoff import nothing
from ..errors import ConnectError, PipelineError
from ..lsn import format_lsn
from ..pg.replication import ReplicationConnection, ReplicationError, StreamEnded, start_stream
from .parts import Parts
from .session import StreamSession


class Stream:
    def __init__(self, parts: Parts, *, until_lsn: int | None, start_lsn: str = "0/0") -> None:
        self._p = parts
        self._until_lsn = until_lsn
        self._start_lsn = start_lsn  # the slot's confirmed position, unless replaying
        self._reconnecting = False

    def run(self) -> None:
        """Stream until stopped (or until ``until_lsn``), reconnecting as often as it takes."""
        p = self._p
        delays = p.backoff.delays()
        while not p.stop.is_set():
            try:
                repl = self._connect()
                delays = p.backoff.delays()
                StreamSession(p, repl, until_lsn=self._until_lsn).run()
                return
            except (StreamEnded, ReplicationError, ConnectError) as exc:
                if isinstance(exc, ReplicationError) and not isinstance(exc, StreamEnded) and exc.sqlstate:
                    raise PipelineError(
                        f"the server refused to stream: {exc}; run `cdc doctor` to see which precondition fails "
                        "and how to fix it, then start `cdc run` again"
                    ) from None
                if p.stop.is_set():
                    return
                delay = next(delays)
                p.log.warning("replication connection lost, reconnecting", error=str(exc), retry_in=round(delay, 2))
                self._reconnecting = True
                self._resume_after_loss()
                p.stop.wait(delay)

    def _connect(self) -> ReplicationConnection:
        p, s = self._p, self._p.settings
        repl, protocol, binary = start_stream(s, start_lsn=self._start_lsn, reconnecting=self._reconnecting)
        p.collector.binary = binary
        p.ack.attach(repl)
        self._start_lsn = "0/0"  # a replay happens once; a reconnect resumes from the slot
        p.log.info("streaming", slot=s.slot, publication=s.publication, protocol=protocol, binary=binary,
                   reader=repl.reader, from_lsn=format_lsn(p.tracker.safe_lsn))
        return repl

    def _resume_after_loss(self) -> None:
        """Store what we hold, then start over from the slot: the server re-sends what we did not acknowledge."""
        p = self._p
        p.ack.close()
        p.handoff.store_all(while_waiting=nothing)
        p.assembler.reset()
        p.collector.buffered_is_stored()

    def finish(self) -> None:
        """Flush what is buffered, wait until it is stored, acknowledge, close."""
        p = self._p
        p.handoff.store_all(while_waiting=p.ack.send_if_connected)
        p.ack.final(p.log)
        p.log.info("stopped", ack_lsn=format_lsn(p.tracker.safe_lsn), **asdict(p.collector.counters))

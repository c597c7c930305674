"""The worker group: every ``cdc run`` on a sharded outbox takes its share of the shards, and gives them back.

Each tick (every ``interval`` seconds, at most 2) a worker:

1. beats (``cdc_workers.heartbeat_at``) and collects the shard streamers that ended;
2. reads which generation to stream and which workers are alive (their lock
   sessions hold their member locks), and computes its share (cdc/workers/shares.py);
3. hands over what is above its share: the streamer stores what it holds and
   acknowledges it, ends, and only then is the shard's lock released, so the
   next owner starts exactly where it stopped;
4. takes free shards up to its share: ``pg_try_advisory_lock`` on the slot's key,
   then starts a streamer.

A streamer that dies unasked is restarted (with backoff) while the lock is kept.
When the lock session fails, the worker owns nothing: it kills every streamer at
once, then connects again and starts over. PostgreSQL's own rule, one walsender
per slot, is the last fence: a new owner whose predecessor's walsender lingers
meets "slot is active" and waits calmly.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from ..backoff import Backoff
from ..errors import PipelineError
from ..pg.shards import streaming_generation
from ..pg.worker_session import LockLost, LockSession
from ..shards.layout import Shard, reshard_key
from . import shares
from .runner import CANNOT_GO_ON, Runner

HEARTBEAT_INTERVAL = 1.0
HUNG_AFTER = 30.0        # a live session that stopped beating this long is ended by the others
FORGET_AFTER = 300.0     # rows of dead workers are kept this long, for `cdc shards show`


@dataclass
class _Owned:
    shard: Shard
    stopping: bool = False
    restart_at: float | None = None
    delays: Iterator[float] | None = None
    done: bool = False  # with --until-lsn: its streamer reached the LSN


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class WorkerGroup:
    def __init__(
        self, *, dsn: str, schema: str, slot: str, runner: Runner, log: FilteringBoundLogger,
        backoff: Backoff, max_shards: int | None = None, interval: float = HEARTBEAT_INTERVAL,
        hung_after: float = HUNG_AFTER, worker_id: str | None = None, until: int | None = None,
        replay: dict[str, int] | None = None,
    ) -> None:
        self.worker_id = worker_id or new_worker_id()
        self._slot = slot
        self._runner = runner
        self._backoff = backoff
        self._interval = interval
        self._hung_after = hung_after
        self._max_shards = max_shards
        self._log = log.bind(worker=self.worker_id)
        self._session = LockSession(dsn, schema=schema, slot=slot, worker_id=self.worker_id,
                                    host=socket.gethostname(), pid=os.getpid(), max_shards=max_shards)
        self._owned: dict[str, _Owned] = {}
        self._reshard_lock = reshard_key(slot)
        self._said: str | None = None
        # With an LSN to stop at, a streamer that ends on its own reached it: the
        # worker keeps the shard (so no one streams it again for nothing) and
        # leaves once every shard of the generation has acknowledged the LSN.
        self._until = until
        self._finished = False
        # What the streamer of a shard met that no restart mends: the worker leaves, then says so.
        self._failed: str | None = None
        # slot -> LSN to replay from, the first time this worker streams it.
        self._replay = dict(replay or {})

    @property
    def owned(self) -> list[Shard]:
        return [o.shard for o in self._owned.values()]

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, abort: threading.Event) -> None:
        """Take part until ``stop``: then hand everything over and leave. ``abort``: leave without storing."""
        delays = self._backoff.delays()
        while not stop.is_set():
            try:
                self._session.open()
                delays = self._backoff.delays()
                self._log.info("worker joined", backend_pid=self._session.backend_pid, max_shards=self._max_shards)
                while not stop.is_set() and not self._finished:
                    self._tick()
                    if not self._finished:
                        stop.wait(self._interval)
                self._leave(abort)
                if self._failed is not None:
                    raise PipelineError(self._failed)
                return
            except LockLost as exc:
                self._lose_everything(str(exc))
                if stop.is_set():
                    return
                delay = next(delays)
                self._log.warning("reconnecting the lock session", retry_in=round(delay, 2))
                stop.wait(delay)

    def _tick(self) -> None:
        session = self._session
        beaten = self._indexes()
        session.heartbeat(beaten)
        self._collect()
        workers = session.workers()
        alive = [w for w in workers if w.alive]
        if self._hung_after > 0:
            for hung in session.end_hung(alive, self._hung_after):
                self._log.warning("ended the lock session of a worker that stopped beating", hung=hung.worker_id,
                                  seconds=round(hung.heartbeat_age, 1))
        generation = streaming_generation(session.sharding(), session.key_holder(self._reshard_lock) is not None)
        shards = [] if generation is None else generation.shard_list()
        self._say(None if generation else "no generation to stream (a reshard is under way?): waiting")
        target = shares.targets(len(shards), {w.worker_id: w.max_shards for w in alive}).get(self.worker_id, 0)
        wanted = {s.slot for s in shards}
        keep = [o for o in self._owned.values() if not o.stopping and o.shard.slot in wanted]
        for owned in self._owned.values():
            if not owned.stopping and owned.shard.slot not in wanted:
                self._hand_over(owned, "its generation is no longer streamed")
        for slot in shares.to_release([o.shard.slot for o in keep], target):
            self._hand_over(self._owned[slot], f"share is {target} of {len(shards)} with {len(alive)} workers")
            keep = [o for o in keep if o.shard.slot != slot]
        if len(keep) < target:
            self._take(shards, target - len(keep), target, len(alive))
        self._restart_due()
        if self._indexes() != beaten:
            # The row says what this worker holds now, before a shard it took starts streaming, so that `cdc
            # shards show` lists under each worker the shards it streams, not those of its last beat.
            session.heartbeat(self._indexes())
        if self._until is not None and shards and all(o.done for o in self._owned.values()):
            # Done when every slot has acknowledged the LSN, or (with --retain, which holds
            # acknowledgements back) when every other shard is owned by a live worker: its own.
            slots = [s.slot for s in shards]
            self._finished = (session.acknowledged_all(slots, self._until)
                              or len(session.holders(slots)) == len(slots))
            if self._finished:
                self._log.info("every shard has reached the LSN to stop at: leaving")

    def _take(self, shards: list[Shard], want: int, target: int, alive: int) -> None:
        held = self._session.holders([s.slot for s in shards])
        for index in shares.preference(self.worker_id, len(shards)):
            shard = shards[index]
            if want <= 0:
                return
            if shard.slot in held or shard.slot in self._owned:
                continue
            if not self._session.try_lock(shard.slot):
                continue
            self._owned[shard.slot] = _Owned(shard)
            replay = self._replay.pop(shard.slot, None)
            self._runner.start(shard if replay is None else dataclasses.replace(shard, replay_from=replay))
            want -= 1
            self._log.info("shard taken", slot=shard.slot, shard=shard.label, share=target, workers=alive)

    def _hand_over(self, owned: _Owned, why: str) -> None:
        owned.stopping = True
        if owned.restart_at is not None or owned.done:
            # Not running (waiting to restart): nothing to store, free it now.
            self._release(owned.shard, "handed over")
            return
        self._runner.stop(owned.shard)
        self._log.info("handing shard over", slot=owned.shard.slot, reason=why)

    def _release(self, shard: Shard, what: str) -> None:
        self._owned.pop(shard.slot, None)
        self._session.unlock(shard.slot)
        self._log.info(f"shard {what}", slot=shard.slot)

    def _collect(self) -> None:
        for exited in self._runner.reap():
            owned = self._owned.get(exited.shard.slot)
            if owned is None:
                continue
            if owned.stopping:
                if exited.code != 0:
                    self._log.warning("shard streamer ended with an error while handing over", slot=exited.shard.slot,
                                      code=exited.code)
                self._release(exited.shard, "handed over")
                continue
            if exited.code == CANNOT_GO_ON:
                self._release(exited.shard, "given up")
                self._failed = exited.why or f"the streamer of shard slot {exited.shard.slot} cannot go on"
                self._finished = True
                continue
            if self._until is not None and exited.code == 0:
                owned.done = True
                self._log.info("shard reached the LSN to stop at", slot=exited.shard.slot)
                continue
            owned.delays = owned.delays or self._backoff.delays()
            delay = next(owned.delays)
            owned.restart_at = time.monotonic() + delay
            self._log.warning("shard streamer ended; restarting it", slot=exited.shard.slot, code=exited.code,
                              retry_in=round(delay, 2))

    def _restart_due(self) -> None:
        now = time.monotonic()
        for owned in self._owned.values():
            if owned.restart_at is not None and now >= owned.restart_at and not owned.stopping:
                owned.restart_at = None
                self._runner.start(owned.shard)

    # -- leaving -----------------------------------------------------------------------------

    def _leave(self, abort: threading.Event) -> None:
        """Hand every shard over (store, acknowledge, end), beating meanwhile; then leave the group."""
        for owned in list(self._owned.values()):
            self._hand_over(owned, "stopping")
        aborted = False
        while self._owned:
            if abort.is_set() and not aborted:
                aborted = True
                for shard in self._runner.running():
                    self._runner.stop(shard)  # the second request: give up what is unstored
            self._collect()
            if self._owned:
                self._session.heartbeat(self._indexes())
                time.sleep(0.05)
        self._session.close(deregister=True)
        self._log.info("worker left")

    def _lose_everything(self, why: str) -> None:
        self._log.error("lost the lock session: stopping every shard at once", error=why,
                        shards=sorted(self._owned))
        for shard in self._runner.running():
            self._runner.kill(shard)
        while self._runner.running():
            self._runner.reap()
            time.sleep(0.01)
        self._owned.clear()
        self._session.close(deregister=False)

    # -- small things ------------------------------------------------------------------------

    def _indexes(self) -> list[int]:
        return [o.shard.index for o in self._owned.values()]

    def _say(self, message: str | None) -> None:
        if message != self._said and message is not None:
            self._log.info(message)
        self._said = message

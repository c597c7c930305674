"""``cdc shards reshard M``: change the number of shards under load, losing and repeating nothing.

The current generation (N shards, or today's single slot) hands over to a new one
(M shards) at one LSN, P:

1. Fence: the current generation is marked ``paused``; its workers store and
   acknowledge what they hold, end their streamers and unlock; this command then
   holds every one of its shard locks, so nothing streams it any more. (An
   unsharded outbox has no workers: its slot must not be in use.)
2. ClickHouse's tables get the stream column if they predate sharding (nothing
   writes now), the outbox gets ``shard_hash`` if it lacks it.
3. M publications and M slots are created; P is the newest of their consistent
   points. Each new slot sends every transaction committed at or after its own
   consistent point, so every one committed at or after P.
4. In one transaction, the new generation becomes ``active`` with ``starts_at = P``
   and the old one ``draining``. Workers start streaming the new one at once; its
   shards skip every transaction committed before P.
5. This command drains the old generation: each old slot delivers exactly what was
   committed before P (and nothing from P on), through the pipeline, with the
   old slot's own high-water mark. Then the old slots, publications and row go.

Killed at any point, running it again resumes: a half-made generation is dropped
and made again, a drain is finished, and a pause whose reshard died is void (the
workers go back to the paused generation by themselves).
"""

from __future__ import annotations

import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from ..lsn import format_lsn
from ..names import NameError_
from ..pg import shards as catalog
from ..pg.connect import Conn, connect
from ..pg.shard_setup import create_publication, drop_quietly, ensure_shard_column, require_row_filters, slot_exists
from ..pg.shards import Generation
from ..pg.slots import want_failover
from ..pipeline.shard import run_shard
from ..settings import Settings
from ..shards import ShardError
from ..shards.layout import Shard, check_count, lock_key, reshard_key, shards_of
from ..sink import open_sink


class Hooks(Protocol):
    def prepare_sink(self) -> None:
        """Give the sink's tables what sharded streams need; called while nothing writes to them."""

    def drain(self, shard: Shard, until: int) -> None:
        """Deliver everything ``shard``'s slot holds that was committed before ``until``, nothing from it on."""


@dataclass
class ReshardReport:
    from_shards: int
    to_shards: int
    generation: int
    starts_at: str | None = None
    drained: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"from_shards": self.from_shards, "to_shards": self.to_shards, "generation": self.generation,
                "starts_at": self.starts_at, "drained": self.drained, "dropped": self.dropped,
                "resumed": self.resumed}


class Resharder:
    def __init__(self, settings: Settings, hooks: Hooks, log: FilteringBoundLogger, *,
                 handover_timeout: float = 120.0, poll: float = 0.2) -> None:
        self._s = settings
        self._hooks = hooks
        self._log = log
        self._timeout = handover_timeout
        self._poll = poll
        self._schema = settings.outbox_schema
        self._failover = False

    def run(self, count: int) -> ReshardReport:
        check_count(count)
        with connect(self._s.pg_dsn, application_name="cdc-reshard") as conn:
            require_row_filters(conn.info.server_version)
            # As `cdc migrate` makes slots: failover slots where the server has them, unless told otherwise;
            # an impossible --failover is refused before anything changes.
            self._failover = want_failover(conn.info.server_version, self._s.failover)
            if not catalog.try_lock(conn, reshard_key(self._s.slot)):
                raise ShardError(f"another `cdc shards reshard` is running for slot {self._s.slot}: wait for it")
            return self._run(conn, count)

    def _run(self, conn: Conn, count: int) -> ReshardReport:
        s = self._s
        sharding = catalog.read_sharding(conn, self._schema, s.slot)
        resumed: list[str] = []
        if sharding is not None:
            for gen in sharding.generations:
                if gen.state == catalog.DRAINING:
                    successor = next(g for g in sharding.generations if g.number > gen.number)
                    assert successor.starts_at is not None
                    self._finish_drain(conn, gen, successor.starts_at, resumed)
            if sharding.current.state == catalog.CREATING:
                drop_quietly(conn, sharding.current.shard_list())
                catalog.delete_generation(conn, self._schema, s.slot, sharding.current.number)
                resumed.append(f"dropped half-made generation {sharding.current.number}")
            sharding = catalog.read_sharding(conn, self._schema, s.slot)
        old = self._old_generation(conn, sharding)
        report = ReshardReport(old.shards, count, old.number, resumed=resumed)
        if old.number > 0 and old.shards == count and old.state == catalog.ACTIVE:
            self._log.info("already split this way: nothing to do", shards=count)
            return report
        new_number = old.number + 1
        try:
            new_shards = shards_of(s.slot, s.publication, new_number, count)
        except NameError_ as exc:
            raise ShardError(str(exc)) from None
        held = self._fence(conn, old)
        try:
            ensure_shard_column(conn, self._schema, s.outbox_table)
            catalog.create_tables(conn, self._schema)
            self._hooks.prepare_sink()
            start = self._create_generation(conn, new_number, new_shards)
            report.generation, report.starts_at = new_number, format_lsn(start)
            self._finish_drain(conn, old, start, report.drained, fresh=True)
            report.dropped = [sh.slot for sh in old.shard_list()]
        finally:
            for slot in held:
                catalog.unlock(conn, lock_key(slot))
        return report

    # -- steps -------------------------------------------------------------------------------

    def _old_generation(self, conn: Conn, sharding: catalog.Sharding | None) -> Generation:
        s = self._s
        if sharding is not None:
            return sharding.current
        if not slot_exists(conn, s.slot):
            raise ShardError(
                f"replication slot {s.slot} does not exist and the outbox is not sharded: "
                "use `cdc migrate --shards N` for a new outbox"
            )
        catalog.create_tables(conn, self._schema)
        catalog.insert_generation(conn, self._schema, slot=s.slot, generation=0, publication=s.publication,
                                  outbox=(self._schema, s.outbox_table), shards=1, state=catalog.ACTIVE)
        return Generation(s.slot, 0, s.publication, 1, catalog.ACTIVE, None, None)

    def _fence(self, conn: Conn, old: Generation) -> list[str]:
        """Make sure nothing streams ``old``: pause it and take every one of its shard locks."""
        s = self._s
        me = conn.info.backend_pid
        catalog.set_state(conn, self._schema, s.slot, old.number, catalog.PAUSED, paused_by=me)
        self._log.info("paused the current generation; waiting for its workers to hand over",
                       generation=old.number, shards=old.shards)
        held: list[str] = []
        pending = [sh.slot for sh in old.shard_list()]
        deadline = time.monotonic() + self._timeout
        while pending:
            for slot in list(pending):
                if catalog.try_lock(conn, lock_key(slot)):
                    held.append(slot)
                    pending.remove(slot)
            if not pending:
                break
            if time.monotonic() > deadline:
                for slot in held:
                    catalog.unlock(conn, lock_key(slot))
                catalog.set_state(conn, self._schema, s.slot, old.number, catalog.ACTIVE)
                raise ShardError(
                    f"the workers did not hand over {', '.join(pending)} within {self._timeout:.0f}s: "
                    "nothing was changed; check `cdc shards show` and try again"
                )
            time.sleep(self._poll)
        if old.number == 0:
            # `cdc run` on one slot takes no lock: its walsender is the only sign of it.
            active = catalog.slot_active_pid(conn, s.slot)
            if active is not None:
                catalog.delete_generation(conn, self._schema, s.slot, 0)
                raise ShardError(
                    f"replication slot {s.slot} is in use by process {active} (a `cdc run` on one slot): "
                    "stop it, reshard, then start workers"
                )
        return held

    def _create_generation(self, conn: Conn, number: int, shards: list[Shard]) -> int:
        s = self._s
        catalog.insert_generation(conn, self._schema, slot=s.slot, generation=number, publication=s.publication,
                                  outbox=(self._schema, s.outbox_table), shards=len(shards), state=catalog.CREATING)
        points = []
        for shard in shards:
            create_publication(conn, shard, self._schema, s.outbox_table)
        for shard in shards:
            points.append(catalog.create_plain_slot(conn, shard.slot, failover=self._failover))
        start = max(points)
        catalog.switch_generation(conn, self._schema, s.slot, number, start)
        self._log.info("new generation streams from here", generation=number, shards=len(shards),
                       starts_at=format_lsn(start))
        return start

    def _finish_drain(self, conn: Conn, old: Generation, until: int, done: list[str], *, fresh: bool = False) -> None:
        for shard in old.shard_list():
            if slot_exists(conn, shard.slot):
                self._log.info("draining", slot=shard.slot, until=format_lsn(until))
                self._hooks.drain(shard, until)
                self._until_released(conn, shard.slot)
                if not catalog.slots_confirmed(conn, [shard.slot], until):
                    # Stopped, or the stream broke: the slot still holds what is undelivered. Keep it.
                    raise ShardError(f"the drain of slot {shard.slot} stopped before {format_lsn(until)}: nothing "
                                     "was dropped; run `cdc shards reshard` again to finish it")
                done.append(shard.slot)
        drop_quietly(conn, old.shard_list())
        catalog.delete_generation(conn, self._schema, self._s.slot, old.number)
        self._log.info("old generation drained and dropped", generation=old.number, resumed=not fresh)

    def _until_released(self, conn: Conn, slot: str) -> None:
        # The drain's last acknowledgement reaches the slot only when its walsender reads it,
        # in another process and maybe after the drain has returned; once that walsender is
        # gone, it has read everything the drain sent (in order, before the end of the stream).
        deadline = time.monotonic() + self._timeout
        while catalog.slot_active_pid(conn, slot) is not None and time.monotonic() < deadline:
            time.sleep(self._poll / 4)

class PipelineHooks:
    """The reshard's sink work done by cdc itself: the stream column, and each old slot drained by its pipeline."""

    def __init__(self, settings: Settings, log: FilteringBoundLogger, stop: threading.Event,
                 abort: threading.Event) -> None:
        self._s, self._log, self._stop, self._abort = settings, log, stop, abort

    def prepare_sink(self) -> None:
        with closing(open_sink(self._s.sink_url, self._s, log=self._log)) as sink:
            sink.ensure_schema()
            sink.ensure_streams()

    def drain(self, shard: Shard, until: int) -> None:
        run_shard(self._s, shard, self._stop, self._abort, log=self._log.bind(slot=shard.slot), stop_before=until)

"""What a worker runs for each shard it owns: that shard's pipeline (cdc/pipeline/shard.py), its exit status."""

from __future__ import annotations

import threading

from structlog.typing import FilteringBoundLogger

from ..errors import SlotBusy, UserError
from ..failpoints import Failpoints
from ..lsn import format_lsn
from ..metrics import MetricsHub
from ..pipeline.retain import Retention
from ..pipeline.shard import run_shard
from ..settings import Settings
from ..shards.layout import Shard
from .runner import CannotGoOn, ShardTarget


def shard_target(
    settings: Settings, *, log: FilteringBoundLogger, failpoints: Failpoints | None, retention: Retention,
    until: int | None,
) -> ShardTarget:
    """What a worker runs for each shard it owns."""

    def target(shard: Shard, stop: threading.Event, abort: threading.Event, metrics: MetricsHub | None) -> int:
        shard_log = log.bind(slot=shard.slot)
        try:
            summary = run_shard(settings, shard, stop, abort, log=shard_log, failpoints=failpoints,
                                retention=retention, until=until, from_lsn=shard.replay_from, metrics=metrics)
        except SlotBusy:
            raise  # the previous owner's walsender, lingering: restarted after a pause
        except UserError as exc:
            shard_log.error("shard streamer cannot go on", error=str(exc))
            raise CannotGoOn(str(exc)) from None
        if summary is not None:
            shard_log.info("shard stopped", ack_lsn=format_lsn(summary.acknowledged_lsn),
                           rows_stored=summary.rows_stored, dead_letters=summary.dead_letters_stored)
        return 0

    return target

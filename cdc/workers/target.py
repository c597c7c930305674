"""What a worker runs for each shard it owns: that shard's pipeline (cdc/pipeline/shard.py), its exit status."""

from __future__ import annotations

import threading

from structlog.typing import FilteringBoundLogger

from ..failpoints import Failpoints
from ..lsn import format_lsn
from ..pipeline.retain import Retention
from ..pipeline.shard import run_shard
from ..settings import Settings
from ..shards.layout import Shard
from .runner import ShardTarget


def shard_target(
    settings: Settings, *, log: FilteringBoundLogger, failpoints: Failpoints | None, retention: Retention,
    until: int | None,
) -> ShardTarget:
    """What a worker runs for each shard it owns."""

    def target(shard: Shard, stop: threading.Event, abort: threading.Event) -> int:
        shard_log = log.bind(slot=shard.slot)
        summary = run_shard(settings, shard, stop, abort, log=shard_log, failpoints=failpoints, retention=retention,
                            until=until, from_lsn=shard.replay_from)
        if summary is not None:
            shard_log.info("shard stopped", ack_lsn=format_lsn(summary.acknowledged_lsn),
                           rows_stored=summary.rows_stored, dead_letters=summary.dead_letters_stored)
        return 0

    return target

"""``cdc status`` of a sharded outbox: the server and ClickHouse as for one slot, then every shard's slot graded.

Each shard is graded as the single slot is (cdc/admin/health.py), its problems
named after it; its lag in time falls back on the time its own stream last
stored an event. An unfinished reshard (a generation still draining) is a
warning: run the reshard again and it finishes.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConnectError
from ..pg import shards as catalog
from ..pg.connect import connect
from ..pg.shards import Sharding
from ..pg.slots import get_slot
from ..settings import Settings
from ..sink import open_sink_admin
from ..sink.base import SinkConfigError, SinkError, StreamSummary
from . import health
from .health import CRITICAL, WARNING, Status

RATE_WINDOW = 60


def gather(settings: Settings, *, max_lag_bytes: int, max_lag_seconds: float, timeout: float = 5.0) -> Status:
    try:
        with connect(settings.pg_dsn, timeout=timeout, application_name="cdc-status") as conn:
            sharding = catalog.read_sharding(conn, settings.outbox_schema, settings.slot)
    except ConnectError:
        sharding = None  # health says it, graded
    if sharding is None:
        return health.gather(settings, max_lag_bytes=max_lag_bytes, max_lag_seconds=max_lag_seconds, timeout=timeout)
    return _sharded(settings, sharding, max_lag_bytes, max_lag_seconds, timeout)


def _sharded(settings: Settings, sharding: Sharding, max_lag_bytes: int, max_lag_seconds: float,
             timeout: float) -> Status:
    status = Status()
    with connect(settings.pg_dsn, timeout=timeout, application_name="cdc-status") as conn:
        health.server_info(status, settings, conn, timeout)
        rows = {shard.slot: get_slot(conn, shard.slot) for shard in sharding.all_shards()}
        alive = sum(1 for w in catalog.list_workers(conn, settings.outbox_schema, settings.slot) if w.alive)
        health.ha_chain(status, settings, conn,
                        [(slot, None if row is None else row.failover) for slot, row in rows.items()], timeout)
    health.clickhouse(status, settings, timeout)
    summaries = _summaries(settings, timeout)
    status.shards = []
    for generation in sharding.generations:
        if generation.state == catalog.DRAINING:
            status.problem(WARNING, f"generation {generation.number} ({generation.shards} shards) is still draining: "
                                    "a reshard was interrupted; run `cdc shards reshard` again to finish it")
        for shard in generation.shard_list():
            label = f"shard {shard.label} (generation {shard.generation}): "
            row = rows[shard.slot]
            summary = summaries.get(shard.stream)
            entry: dict[str, Any] = {"shard": shard.label, "generation": shard.generation, "state": generation.state,
                                     "stream": shard.stream}
            if row is None:
                status.problem(CRITICAL, f"{label}replication slot {shard.slot} does not exist")
                entry["slot"] = {"name": shard.slot, "exists": False}
            else:
                last = summary.last_inserted_at if summary is not None else None
                entry["slot"] = health.grade_slot(status, row, last, max_lag_bytes, max_lag_seconds, label=label)
            entry["events_per_second"] = None if summary is None else round(summary.recent_events / RATE_WINDOW, 1)
            status.shards.append(entry)
    status.postgres["live_workers"] = alive
    return status


def _summaries(settings: Settings, timeout: float) -> dict[int, StreamSummary]:
    if not settings.sink_url:
        return {}
    try:
        with open_sink_admin(settings.sink_url, settings, timeout=timeout) as admin:
            return admin.stream_summaries(RATE_WINDOW)
    except (SinkConfigError, SinkError):
        return {}  # health.clickhouse() has said so

"""``cdc shards show``: per shard, its slot, which worker owns it, how far behind it is, and how fast it goes.

The owner is whoever holds the slot's advisory lock (cdc/workers/session.py),
named by its ``cdc_workers`` row. Lag in bytes is the slot's distance to the
server's WAL position; lag in time is PostgreSQL's ``flush_lag`` while a
walsender streams it, else the time since the shard last stored an event.
Rate is the events the shard stored in ClickHouse over the last minute, per
second (only with a ClickHouse URL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..lsn import format_lsn
from ..pg import shards as catalog
from ..pg.connect import connect
from ..pg.slots import SlotRow, list_slots
from ..settings import Settings
from ..shards.layout import Shard, lock_key, split_key, unsharded
from ..sink import SinkConfigError, open_sink_admin
from ..sink.base import SinkError, StreamSummary
from .health import seconds_since

RATE_WINDOW = 60


@dataclass(frozen=True, slots=True)
class ShardStatus:
    generation: int
    shard: str
    state: str
    slot: str
    publication: str
    stream: int
    slot_exists: bool
    streaming_pid: int | None
    owner: str | None
    owner_host: str | None
    owner_pid: int | None
    lag_bytes: int | None
    lag_seconds: float | None
    rate: float | None
    high_water_mark: str | None


@dataclass
class ShardsReport:
    sharded: bool
    shards: list[ShardStatus] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    clickhouse_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"sharded": self.sharded, "shards": [asdict(s) for s in self.shards], "workers": self.workers,
                "clickhouse_error": self.clickhouse_error}


def gather(settings: Settings, *, timeout: float = 5.0) -> ShardsReport:
    with connect(settings.pg_dsn, timeout=timeout, application_name="cdc-shards") as conn:
        sharding = catalog.read_sharding(conn, settings.outbox_schema, settings.slot)
        if sharding is None:
            shards = [(unsharded(settings.slot, settings.publication), "active")]
        else:
            shards = [(s, g.state) for g in sharding.generations for s in g.shard_list()]
        slots = {row.name: row for row in list_slots(conn)}
        workers = ([_worker(w) for w in catalog.list_workers(conn, settings.outbox_schema, settings.slot)]
                   if sharding is not None else [])
        locks = catalog.advisory_locks(conn)
    report = ShardsReport(sharded=sharding is not None, workers=workers)
    summaries: dict[int, StreamSummary] = {}
    if settings.sink_url:
        try:
            with open_sink_admin(settings.sink_url, settings, timeout=timeout) as admin:
                summaries = admin.stream_summaries(RATE_WINDOW)
        except (SinkConfigError, SinkError) as exc:
            report.clickhouse_error = str(exc)
    by_backend = {w["backend_pid"]: w for w in workers if w["alive"]}
    for shard, state in shards:
        owner = by_backend.get(locks.get(split_key(lock_key(shard.slot)), -1))
        report.shards.append(_status(shard, state, slots.get(shard.slot), owner, summaries.get(shard.stream)))
    return report


def _worker(w: catalog.Worker) -> dict[str, Any]:
    return {"worker_id": w.worker_id, "host": w.host, "pid": w.pid, "backend_pid": w.backend_pid,
            "max_shards": w.max_shards, "shards": list(w.shards), "started_at": w.started_at,
            "heartbeat_age_seconds": round(w.heartbeat_age, 1), "alive": w.alive}


def _status(
    shard: Shard, state: str, slot: SlotRow | None, owner: dict[str, Any] | None, summary: StreamSummary | None,
) -> ShardStatus:
    lag_seconds: float | None = None
    if slot is not None:
        if slot.lag_bytes is not None and slot.lag_bytes <= 0:
            lag_seconds = 0.0
        elif slot.active:
            lag_seconds = slot.flush_lag_seconds or 0.0
        else:
            lag_seconds = seconds_since(slot.inactive_since or (summary.last_inserted_at if summary else None))
    return ShardStatus(
        generation=shard.generation, shard=shard.label, state=state, slot=shard.slot, publication=shard.publication,
        stream=shard.stream, slot_exists=slot is not None,
        streaming_pid=slot.active_pid if slot is not None else None,
        owner=owner["worker_id"] if owner else None, owner_host=owner["host"] if owner else None,
        owner_pid=owner["pid"] if owner else None,
        lag_bytes=slot.lag_bytes if slot is not None else None, lag_seconds=lag_seconds,
        rate=round(summary.recent_events / RATE_WINDOW, 1) if summary is not None else None,
        high_water_mark=(f"{format_lsn(summary.high_water_mark[0])}#{summary.high_water_mark[1]}"
                         if summary is not None else None),
    )

"""``cdc shards show``: the shards of a sharded outbox, who streams them, how far behind they are."""

from __future__ import annotations

import click

from ..settings import Settings
from ..admin import shards as shard_show
from ._output import emit_json, human_bytes, human_seconds, json_option, table
from .options import require_pg, shared_options


@click.group()
def shards() -> None:
    """Sharded slots: show them (see `cdc migrate --shards N`)."""


@shards.command("show")
@shared_options
@click.option("--timeout", type=click.FloatRange(min=1), default=5.0, show_default=True,
              help="Seconds to wait for each server.")
@json_option
def show(settings: Settings, timeout: float, as_json: bool) -> None:
    """Per shard: its slot, the worker that owns it, its lag in bytes and seconds, and its rate."""
    require_pg(settings)
    report = shard_show.gather(settings, timeout=timeout)
    if as_json:
        emit_json(report.as_dict())
        return
    if not report.sharded:
        click.echo(f"not sharded: one slot, {settings.slot} (`cdc migrate --shards N` splits new outboxes)")
    table(
        ["gen", "shard", "state", "slot", "owner", "streaming", "lag", "lag time", "events/s", "high-water"],
        [[s.generation, s.shard, s.state, s.slot if s.slot_exists else f"{s.slot} (missing)",
          s.owner or "", f"pid {s.streaming_pid}" if s.streaming_pid else "no",
          human_bytes(s.lag_bytes), human_seconds(s.lag_seconds) if s.lag_seconds is not None else "",
          "" if s.rate is None else f"{s.rate:g}", s.high_water_mark or ""] for s in report.shards],
    )
    if report.workers:
        click.echo("")
        table(["worker", "host", "pid", "alive", "shards", "max", "last beat"],
              [[w["worker_id"], w["host"], w["pid"], w["alive"], ",".join(map(str, w["shards"])),
                w["max_shards"] or "", f"{w['heartbeat_age_seconds']:g}s ago"] for w in report.workers])
    if report.clickhouse_error:
        click.echo(f"ClickHouse: {report.clickhouse_error} (no rates or high-water marks)")

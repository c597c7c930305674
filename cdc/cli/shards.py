"""``cdc shards show | reshard M``: the shards of a sharded outbox, who streams them, how far behind they are;
and changing their number under load (cdc/admin/reshard.py)."""

from __future__ import annotations

import click

from ..logs import get_logger
from ..settings import Settings
from ..shards.layout import MAX_SHARDS
from ..stopping import StopSignals
from ..admin import shards as shard_show
from ._output import confirm, emit_json, human_bytes, human_seconds, json_option, table, yes_option
from .options import cdc_option, require_pg, require_sink, settings_options, shared_options


@click.group()
def shards() -> None:
    """Sharded slots: show them, or change their number (see `cdc migrate --shards N`)."""


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


@shards.command()
@shared_options
@click.argument("count", type=click.IntRange(1, MAX_SHARDS))
@cdc_option("--handover-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
            help="Seconds to wait for the workers to hand the current shards over.")
@settings_options("batch_rows", "flush_interval", "dedup_window", "dedup_max_age", "binary", "retry_initial",
                  "retry_max", "failover")
@yes_option
@json_option
def reshard(settings: Settings, count: int, handover_timeout: float, yes: bool, as_json: bool) -> None:
    """Split new events over COUNT shards instead, under load, losing and repeating nothing: the current
    generation hands over, a new one starts at one LSN, the old slots are drained to it and dropped.
    Run it again after an interruption: it finishes what was started."""
    from ..admin.reshard import PipelineHooks, Resharder

    require_pg(settings)
    require_sink(settings)
    confirm(f"Reshard the outbox {settings.outbox_schema}.{settings.outbox_table} into {count} shard(s)? Its "
            "workers pause for a few seconds while the new slots are made.", yes=yes,
            refusal=f"resharding into {count} shards")
    log = get_logger(slot=settings.slot)
    with StopSignals() as signals:
        report = Resharder(settings, PipelineHooks(settings, log, signals.stop, signals.abort), log,
                           handover_timeout=handover_timeout).run(count)
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(f"resharded from {report.from_shards} to {report.to_shards} shard(s): generation {report.generation} "
               f"streams from {report.starts_at or 'its start'}")
    for line in report.resumed:
        click.echo(f"  resumed: {line}")
    if report.drained:
        click.echo(f"  drained and dropped: {', '.join(report.dropped)}")

"""``cdc status``: fast, read-only, graded for cron and monitoring (exit 0 OK, 1 WARNING, 2 CRITICAL)."""

from __future__ import annotations

import sys

import click

from ..admin import health, shard_status
from ..settings import Settings
from ._output import emit_json, human_bytes, human_seconds, json_option
from .options import Finite, cdc_option, settings_options, shared_options


@click.command()
@shared_options
@cdc_option("--max-lag-bytes", type=click.IntRange(min=0), default=1024 ** 3, show_default=True,
            help="WARNING when the slot is further behind.")
@cdc_option("--max-lag-seconds", type=Finite(min=0), default=300.0, show_default=True,
            help="WARNING when the slot is longer behind.")
@click.option("--timeout", type=Finite(min=1), default=5.0, show_default=True,
              help="Seconds to wait for each server before calling it unreachable.")
@settings_options("standby_dsns")
@json_option
def status(settings: Settings, max_lag_bytes: int, max_lag_seconds: float, timeout: float, as_json: bool) -> None:
    """Server, slot lag, and what ClickHouse holds. Exit 0 OK, 1 WARNING (slot inactive or behind the
    thresholds), 2 CRITICAL (slot missing or invalidated, a server unreachable). Never asks anything."""
    if not settings.pg_dsn:
        raise click.UsageError("no PostgreSQL DSN: pass --pg-dsn or set CDC_PG_DSN")
    result = shard_status.gather(settings, max_lag_bytes=max_lag_bytes, max_lag_seconds=max_lag_seconds,
                                 timeout=timeout)
    if as_json:
        emit_json(result.as_dict())
    else:
        _print(result)
    sys.exit(result.level)


def _print(result: health.Status) -> None:
    worst = [msg for level, msg in result.problems if level == result.level]
    headline = health.LEVEL_NAMES[result.level]
    click.echo(f"{headline}: {worst[0]}" if worst else f"{headline}: streaming and caught up")
    for level, msg in result.problems:
        if msg not in worst[:1]:
            click.echo(f"  {health.LEVEL_NAMES[level]}: {msg}")
    pg = result.postgres
    if pg.get("reachable"):
        click.echo(f"postgres     {pg['address']}  PostgreSQL {pg['version']}  wal_level={pg['wal_level']}  "
                   f"max_slot_wal_keep_size={pg['max_slot_wal_keep_size'] or 'n/a'}")
    slot = result.slot
    if slot and slot.get("exists"):
        state = f"active (pid {slot['pid']})" if slot["active"] else "inactive"
        click.echo(f"slot         {slot['name']}  {state}  wal_status={slot['wal_status'] or 'n/a'}  "
                   f"confirmed {slot['confirmed_flush_lsn']}")
        ack = (f"last acknowledgement {human_seconds(slot['last_ack_age_seconds'])} ago"
               if slot["last_ack_age_seconds"] is not None else f"last acknowledgement {slot['last_ack_source']}")
        lag_bytes = slot["lag_bytes"]
        click.echo(f"lag          {human_bytes(lag_bytes)} ({lag_bytes} bytes), "
                   f"{human_seconds(slot['lag_seconds'])}; {ack}")
    for shard in result.shards or ():
        slot = shard["slot"]
        if not slot.get("exists"):
            click.echo(f"shard {shard['shard']:<6} {slot['name']}  missing")
            continue
        state = f"active (pid {slot['pid']})" if slot["active"] else "inactive"
        rate = "" if shard["events_per_second"] is None else f", {shard['events_per_second']:g} events/s"
        click.echo(f"shard {shard['shard']:<6} {slot['name']}  {state}  lag {human_bytes(slot['lag_bytes'])}, "
                   f"{human_seconds(slot['lag_seconds'])}{rate}")
    ch = result.clickhouse
    if ch and ch.get("reachable"):
        click.echo(f"clickhouse   {ch['url']}  ClickHouse {ch['version']}")
        hwm = ch["high_water_mark"]
        if hwm:
            origin = "" if hwm["origin"] == "stream" else f" ({hwm['origin']})"
            click.echo(f"high-water   {hwm['commit_lsn']} #{hwm['commit_seq']}{origin}, committed {hwm['committed_at']} "
                       f"({human_seconds(hwm['age_seconds'])} ago)")
        else:
            click.echo("high-water   none: no event delivered yet")
        click.echo(f"delivered    {ch['events']} events, {ch['dead_letters']} dead letters")

"""``cdc migrate``: everything a first deployment needs, idempotent."""

from __future__ import annotations

import click
import orjson

from ..logs import get_logger
from ..pg.migrate import migrate as run_migrations
from ..settings import Settings
from ..shards.layout import MAX_SHARDS
from ..pg.shard_setup import ShardSetup
from ..sink import open_sink
from .options import require_pg, settings_options, shared_options


@click.command()
@shared_options
@settings_options("failover")
@click.option("--json", "as_json", is_flag=True, help="Report as JSON.")
@click.option("--shards", type=click.IntRange(1, MAX_SHARDS), envvar="CDC_SHARDS", show_envvar=True,
              help="Split new events over this many slots (PostgreSQL 15+); 1 is one slot, as before. "
                   "Default: keep what there is.")
def migrate(settings: Settings, as_json: bool, shards: int | None) -> None:
    """Create the outbox table, its publication and slot, and (with a ClickHouse URL) the events table.

    Safe to run again: applied migrations are recorded and skipped.
    """
    require_pg(settings)
    report = run_migrations(settings, shards)
    clickhouse = None
    if settings.sink_url:
        sink = open_sink(settings.sink_url, settings, log=get_logger())
        try:
            sink.ensure_schema()
            if report.shards is not None:
                # Before any worker writes: tables of an unsharded past get the stream column.
                sink.ensure_streams()
            clickhouse = settings.sink_table
        finally:
            sink.close()
    if as_json:
        click.echo(orjson.dumps({
            "migrations_applied": report.applied, "publication_created": report.publication_created,
            "slot_created": report.slot_created, "slot_skipped_reason": report.slot_skipped_reason,
            "shards": None if report.shards is None else report.shards.as_dict(),
            "slot_failover": report.slot_failover,
            "clickhouse_table": clickhouse,
        }).decode())
        return
    click.echo(f"migrations applied: {', '.join(report.applied) or 'none (up to date)'}")
    if report.shards is not None:
        _echo_shards(settings, report.shards)
        click.echo(f"ClickHouse table: {clickhouse or 'skipped (no --clickhouse-url)'}")
        return
    click.echo(f"publication {settings.publication}: {'created' if report.publication_created else 'exists'}")
    if report.slot_skipped_reason:
        click.echo(f"slot {settings.slot}: not created: {report.slot_skipped_reason}")
    else:
        kind = " (failover)" if report.slot_created and report.slot_failover else ""
        click.echo(f"slot {settings.slot}: {'created' if report.slot_created else 'exists'}{kind}")
    click.echo(f"ClickHouse table: {clickhouse or 'skipped (no --clickhouse-url)'}")


def _echo_shards(settings: Settings, shards: ShardSetup) -> None:
    click.echo(f"shards: {shards.shards} (generation {shards.generation})"
               + ("; shard_hash column added to the outbox" if shards.column_added else ""))
    made = len(shards.publications_created), len(shards.slots_created)
    click.echo(f"publications {settings.publication}_*: {made[0]} created, {shards.shards - made[0]} existed")
    click.echo(f"slots {settings.slot}_*: {made[1]} created, {shards.shards - made[1]} existed")

"""``cdc migrate``: everything a first deployment needs, idempotent."""

from __future__ import annotations

import click
import orjson

from ..logs import get_logger
from ..pg.migrate import migrate as run_migrations
from ..settings import Settings
from ..sink import open_sink
from .options import require_pg, settings_options, shared_options


@click.command()
@shared_options
@settings_options("failover")
@click.option("--json", "as_json", is_flag=True, help="Report as JSON.")
def migrate(settings: Settings, as_json: bool) -> None:
    """Create the outbox table, its publication and slot, and (with a ClickHouse URL) the events table.

    Safe to run again: applied migrations are recorded and skipped.
    """
    require_pg(settings)
    report = run_migrations(settings)
    clickhouse = None
    if settings.sink_url:
        sink = open_sink(settings.sink_url, settings, log=get_logger())
        try:
            sink.ensure_schema()
            clickhouse = settings.sink_table
        finally:
            sink.close()
    if as_json:
        click.echo(orjson.dumps({
            "migrations_applied": report.applied, "publication_created": report.publication_created,
            "slot_created": report.slot_created, "slot_skipped_reason": report.slot_skipped_reason,
            "slot_failover": report.slot_failover,
            "clickhouse_table": clickhouse,
        }).decode())
        return
    click.echo(f"migrations applied: {', '.join(report.applied) or 'none (up to date)'}")
    click.echo(f"publication {settings.publication}: {'created' if report.publication_created else 'exists'}")
    if report.slot_skipped_reason:
        click.echo(f"slot {settings.slot}: not created: {report.slot_skipped_reason}")
    else:
        kind = " (failover)" if report.slot_created and report.slot_failover else ""
        click.echo(f"slot {settings.slot}: {'created' if report.slot_created else 'exists'}{kind}")
    click.echo(f"ClickHouse table: {clickhouse or 'skipped (no --clickhouse-url)'}")

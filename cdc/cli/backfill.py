"""``cdc backfill``: deliver again the outbox rows created in a time range (see cdc/admin/backfill.py)."""

from __future__ import annotations

import sys

import click

from ..admin.backfill import Backfill
from ..settings import Settings
from ..logs import get_logger
from ._output import emit_json, json_option
from ._progress import Progress
from .options import require_pg, require_sink, settings_options, shared_options


@click.command()
@shared_options
@click.option("--since", required=True, metavar="TIMESTAMP", help="First created_at to deliver (inclusive), "
              "as PostgreSQL reads a timestamptz; without a zone, UTC.")
@click.option("--until", metavar="TIMESTAMP", help="Stop before this created_at (default: everything after --since).")
@settings_options("batch_rows", "dedup_window", "dedup_max_age", help={
    "batch_rows": "Rows per ClickHouse INSERT.",
    "dedup_window": "How many recently stored unique_ids to skip as duplicates (0: none).",
    "dedup_max_age": "... stored within this many seconds.",
})
@json_option
def backfill(settings: Settings, since: str, until: str | None, as_json: bool) -> None:
    """Deliver again every outbox row created from --since (to --until), read from one consistent snapshot,
    through the same conversion, dead-letter and dedup path as `cdc run`. Events ClickHouse already holds
    collapse with their copy. No slot is touched."""
    require_pg(settings)
    require_sink(settings)
    with Backfill(settings, since=since, until=until) as job, Progress("backfill", log=get_logger()) as progress:
        progress.phase("rows", job.total)
        summary = job.run(progress.advance)
    if as_json:
        emit_json(summary.as_dict())
        return
    click.echo(f"backfill {summary.since} .. {summary.until or 'now'}: {summary.rows_read} rows read, "
               f"{summary.events_stored} events and {summary.dead_letters_stored} dead letters stored, "
               f"{summary.duplicates} duplicates skipped ({summary.seconds:.1f}s)")
    sys.stdout.flush()

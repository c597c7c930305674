"""``cdc outbox maintain | prune``: the outbox's partitions, from cron."""

from __future__ import annotations

import re
import sys
from datetime import timedelta

import click

from ..admin import AdminError
from ..admin.prune import prune as prune_partitions
from ..pg.shards import read_sharding
from ..pg.connect import connect
from ..pg.partitions import maintain as make_partitions
from ..settings import Settings
from ..sink import open_sink_admin
from ._output import emit_json, json_option, table
from .options import Finite, require_pg, require_sink, shared_options

_AGE = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    match = _AGE.match(text)
    if not match:
        raise AdminError(f"--older-than {text!r} is not an age: write a number and a unit, like 7d, 36h or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _age_value(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # A malformed flag is refused while parsing (exit 2), before any server is touched.
    try:
        parse_age(value)
    except AdminError as exc:
        raise click.BadParameter(str(exc).removeprefix("--older-than "), ctx=ctx, param=param) from None
    return value


@click.group()
def outbox() -> None:
    """The outbox's partitions: create the coming ones, drop delivered old ones."""


@outbox.command()
@shared_options
@click.option("--days-ahead", type=click.IntRange(min=0, max=3650), default=7, show_default=True,
              help="Have partitions up to this many days from now.")
@click.option("--interval", type=click.Choice(["day", "week"]), default="day", show_default=True,
              help="One partition per day, or per week (starting Monday, UTC).")
@json_option
def maintain(settings: Settings, days_ahead: int, interval: str, as_json: bool) -> None:
    """Create the outbox's partitions from the current day (or week) to --days-ahead, named <table>_pYYYYMMDD.
    Idempotent and safe from cron. Exit 1 when a partition could not be created."""
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        results = make_partitions(conn, settings.outbox_schema, settings.outbox_table,
                                  days_ahead=days_ahead, interval=interval)
    failed = any(r.action == "failed" for r in results)
    if as_json:
        emit_json({"partitions": [r.as_dict() for r in results], "ok": not failed})
    else:
        table(["partition", "from", "to", "action", "note"],
              [[r.name, r.lower, r.upper, r.action, r.note] for r in results])
    if failed:
        sys.exit(1)


@outbox.command()
@shared_options
@click.option("--older-than", "older_than", required=True, metavar="AGE", callback=_age_value,
              help="Drop partitions whose whole range is older than this (7d, 36h, 2w).")
@click.option("--dry-run", is_flag=True, help="Check everything, drop nothing.")
@click.option("--wait", type=Finite(min=0), default=60.0, show_default=True,
              help="Seconds to wait for the slot to acknowledge the rows of the old partitions.")
@click.option("--lock-timeout", type=Finite(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for each lock; busy partitions are left for the next run.")
@json_option
def prune(settings: Settings, older_than: str, dry_run: bool, wait: float, lock_timeout: float, as_json: bool) -> None:
    """Drop whole outbox partitions older than --older-than, but only those whose every row ClickHouse holds:
    the slot must have acknowledged past them and their first and last rows must be in ClickHouse. The default
    partition is never dropped."""
    age = parse_age(older_than)
    require_sink(settings)
    with connect(require_pg(settings), application_name="cdc-prune") as conn:
        # A sharded outbox: a row is delivered once its shard's slot passed it, so every slot must have.
        sharding = read_sharding(conn, settings.outbox_schema, settings.slot)
        slots = [settings.slot] if sharding is None else [shard.slot for shard in sharding.all_shards()]
        results = prune_partitions(
            conn, schema=settings.outbox_schema, table=settings.outbox_table, slots=slots,
            open_warehouse=lambda: open_sink_admin(settings.sink_url, settings), older_than=age, dry_run=dry_run, wait=wait,
            lock_timeout_ms=int(lock_timeout * 1000),
        )
    if as_json:
        emit_json({"dry_run": dry_run, "partitions": [r.as_dict() for r in results]})
        return
    if not results:
        click.echo(f"no partition of {settings.outbox_schema}.{settings.outbox_table} is older than {older_than}")
        return
    table(["partition", "from", "to", "rows (est.)", "action", "reason"],
          [[r.partition.name, r.partition.lower, r.partition.upper,
            "" if r.partition.estimated_rows < 0 else r.partition.estimated_rows, r.action, r.reason]
           for r in results])

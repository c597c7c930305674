"""``cdc run``: stream until stopped, or until an LSN is stored and acknowledged."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from ..failpoints import Failpoints
from ..logs import get_logger
from ..lsn import format_lsn, parse_lsn
from ..pipeline import Pipeline, build
from ..pipeline.retain import RetainError, Retention
from ..settings import Settings
from ..sink import open_sink
from .options import (
    cdc_option, lsn_or_current_value, lsn_value, require_pg, require_sink, settings_options, shared_options, with_changes,
)


@click.command()
@shared_options
@cdc_option("--create-slot", is_flag=True,
            help="Create the slot if it is missing, first delivering the rows already in the outbox.")
@cdc_option("--until-lsn", metavar="LSN|current", callback=lsn_or_current_value,
            help="Stop once everything committed up to this LSN ('current': now) is stored and acknowledged.")
@cdc_option("--from-lsn", metavar="LSN", callback=lsn_value,
            help="Replay: deliver again everything committed after LSN that the slot still holds.")
@cdc_option("--from-checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Replay from the position in a file written by `cdc checkpoint save`.")
@cdc_option("--retain", metavar="SIZE|TIME",
            help="Replay window: acknowledge this much WAL (512MB) or time (6h) behind what is stored.")
@settings_options("batch_rows", "batch_bytes", "flush_interval", "dedup_window", "dedup_max_age", "max_payload_bytes",
                  "streaming", "spill_bytes", "status_interval", "read_settle", "retry_max", "retry_initial")
def run(
    settings: Settings, create_slot: bool, until_lsn: str | None, from_lsn: str | None,
    from_checkpoint: Path | None, retain: str | None,
) -> None:
    """Stream committed outbox rows into ClickHouse until stopped (SIGINT/SIGTERM flush, acknowledge, exit 0)."""
    settings = with_changes(settings, retry_max=max(settings.retry_max, settings.retry_initial))
    require_pg(settings)
    replay_from = _replay_position(settings, from_lsn, from_checkpoint)
    try:
        retention = Retention.parse(retain)
    except RetainError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        failpoints = Failpoints.from_env()
    except ValueError as exc:
        raise click.UsageError(f"CDC_FAILPOINTS: {exc}") from None
    log = get_logger(slot=settings.slot)
    stop = threading.Event()
    # Before anything connects: a SIGTERM during start-up must end the run
    # cleanly (exit 0, nothing acknowledged), not kill it with -15.
    started: list[Pipeline] = []
    _install_signal_handlers(stop, started)
    sink = open_sink(require_sink(settings), settings, log=log)
    try:
        sink.ensure_schema()
        pipeline = build(settings, sink, log=log, stop=stop, failpoints=failpoints, retention=retention)
        started.append(pipeline)
        summary = pipeline.run(until=until_lsn, create_slot=create_slot, from_lsn=replay_from)
    finally:
        sink.close()
    log.info("done", ack_lsn=format_lsn(summary.acknowledged_lsn), rows_stored=summary.rows_stored,
             dead_letters=summary.dead_letters_stored, duplicates=summary.counters.duplicates)


def _replay_position(settings: Settings, from_lsn: str | None, from_checkpoint: Path | None) -> int | None:
    if from_lsn is not None and from_checkpoint is not None:
        raise click.UsageError("give --from-lsn or --from-checkpoint, not both")
    if from_checkpoint is not None:
        from ..admin import checkpoint

        # LSNs mean nothing on another cluster: refuse a checkpoint saved elsewhere.
        checkpoint.check_same_server(
            checkpoint.read_checkpoint(from_checkpoint),
            checkpoint.identify(settings.pg_dsn).system_identifier,
            str(from_checkpoint),
        )
        return checkpoint.load_checkpoint(from_checkpoint)
    return None if from_lsn is None else parse_lsn(from_lsn)


def _install_signal_handlers(stop: threading.Event, started: list[Pipeline]) -> None:
    """First signal: flush, acknowledge, exit 0. Second: stop retrying (``started`` holds the pipeline once built)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if not started:
            # Still starting (a connection may be blocked for its whole timeout):
            # nothing has been read, so there is nothing to flush or acknowledge.
            click.echo("cdc: stopped during start-up; nothing was read or acknowledged", err=True)
            raise SystemExit(0)
        if stop.is_set():
            # Second signal: stop retrying; whatever is not stored is not acknowledged.
            for pipeline in started:
                pipeline.abort()
            click.echo("cdc: stopping without flushing; unstored rows will be re-read from the slot", err=True)
            return
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)

"""``cdc run``: stream until stopped, or until an LSN is stored and acknowledged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from structlog.typing import FilteringBoundLogger

from ..errors import PipelineError
from ..failpoints import Failpoints
from ..heap import tune_for_streaming
from ..logs import get_logger
from ..lsn import format_lsn, parse_lsn
from ..pipeline import Pipeline, build
from ..pipeline.retain import RetainError, Retention
from ..settings import Settings
from ..sink import open_sink
from ..stopping import StopSignals
from .options import (
    cdc_option, lsn_or_current_value, lsn_value, require_pg, require_sink, settings_options, shared_options, with_changes,
)

if TYPE_CHECKING:  # prometheus_client is loaded only when an endpoint is served
    from ..metrics.exporter import Address, MetricsServer


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
                  "streaming", "binary", "spill_bytes", "status_interval", "read_settle", "retry_max",
                  "retry_initial", "heartbeat_interval", "failover")
@cdc_option("--metrics-addr", metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (off unless set).")
@cdc_option("--max-shards", type=click.IntRange(min=0),
            help="On a sharded outbox: stream at most this many shards in this process (default: its share).")
@cdc_option("--shard-threads", is_flag=True, hidden=True,
            help="Stream shards in threads of this process rather than in child processes (for measurements).")
def run(
    settings: Settings, create_slot: bool, until_lsn: str | None, from_lsn: str | None,
    from_checkpoint: Path | None, retain: str | None, metrics_addr: str | None, max_shards: int | None,
    shard_threads: bool,
) -> None:
    """Stream committed outbox rows into ClickHouse until stopped (SIGINT/SIGTERM flush, acknowledge, exit 0)."""
    settings = with_changes(settings, retry_max=max(settings.retry_max, settings.retry_initial))
    require_pg(settings)
    address = None
    if metrics_addr:
        from ..metrics.exporter import Address, MetricsAddressError

        try:
            address = Address.parse(metrics_addr)
        except MetricsAddressError as exc:
            raise click.UsageError(str(exc)) from None
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
    require_sink(settings)
    started: list[Pipeline] = []

    def give_up() -> None:
        for pipeline in started:
            pipeline.abort()
        click.echo("cdc: stopping without flushing; unstored rows will be re-read from the slot", err=True)

    # Before anything connects: a SIGTERM during start-up must end the run cleanly
    # (exit 0, nothing acknowledged), not kill it with -15. The first signal after
    # start-up flushes, acknowledges and exits 0; the second stops retrying.
    with StopSignals(on_abort=give_up,
                     exit_while_starting="cdc: stopped during start-up; nothing was read or acknowledged") as signals:
        plan = _Plan(create_slot=create_slot, until_lsn=until_lsn, replay_from=replay_from,
                     from_checkpoint=from_checkpoint, retention=retention, failpoints=failpoints, address=address,
                     max_shards=max_shards, shard_threads=shard_threads)
        _run(settings, signals, started, plan, log=log)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the command line asked of this run, checked."""

    create_slot: bool
    until_lsn: str | None
    replay_from: int | None
    from_checkpoint: Path | None
    retention: Retention
    failpoints: Failpoints | None
    address: Address | None
    max_shards: int | None
    shard_threads: bool


def _run(settings: Settings, signals: StopSignals, started: list[Pipeline], plan: _Plan, *,
         log: FilteringBoundLogger) -> None:
    from ..workers.worker import is_sharded  # only a sharded outbox needs the group's modules

    if is_sharded(settings):
        _run_worker(settings, signals, plan, log=log)
        return
    sink = open_sink(require_sink(settings), settings, log=log)
    with ExitStack() as cleanup:
        cleanup.callback(sink.close)
        sink.ensure_schema()
        pipeline = build(settings, sink, log=log, stop=signals.stop, failpoints=plan.failpoints,
                         retention=plan.retention)
        if plan.address is not None:
            cleanup.enter_context(_serve_metrics(plan.address, log)).add(pipeline.parts.metrics)
        started.append(pipeline)
        signals.started()
        tune_for_streaming()
        summary = pipeline.run(until=plan.until_lsn, create_slot=plan.create_slot, from_lsn=plan.replay_from)
    log.info("done", ack_lsn=format_lsn(summary.acknowledged_lsn), rows_stored=summary.rows_stored,
             dead_letters=summary.dead_letters_stored, duplicates=summary.counters.duplicates)


def _run_worker(settings: Settings, signals: StopSignals, plan: _Plan, *, log: FilteringBoundLogger) -> None:
    """A sharded outbox: join the worker group and stream this process's share of the shards."""
    from ..workers.worker import run_worker

    if plan.create_slot:
        raise click.UsageError("--create-slot is not for a sharded outbox: `cdc migrate --shards N` creates the "
                               "slots, `cdc backfill` delivers what they miss")
    replay: int | dict[str, int] | None = plan.replay_from
    if plan.from_checkpoint is not None:
        from ..admin import checkpoint

        replay = checkpoint.load_shard_positions(plan.from_checkpoint) or plan.replay_from
    with ExitStack() as serving:
        # One endpoint for the process: every shard it streams, whether in a thread or a child process.
        server = None if plan.address is None else serving.enter_context(_serve_metrics(plan.address, log))
        tune_for_streaming()
        run_worker(settings, signals, log=log, failpoints=plan.failpoints, retention=plan.retention,
                   until=plan.until_lsn, max_shards=plan.max_shards, threads=plan.shard_threads, replay=replay,
                   metrics=server)


@contextmanager
def _serve_metrics(address: Address, log: FilteringBoundLogger) -> Iterator[MetricsServer]:
    """The process's metrics endpoint, for as long as the run lasts."""
    from ..metrics.exporter import Address, MetricsServer

    server = MetricsServer(address)
    try:
        server.start()
    except OSError as exc:
        raise PipelineError(
            f"cannot serve metrics on {address}: {exc.strerror or exc}; choose another --metrics-addr"
        ) from None
    log.info("serving metrics", url=f"http://{Address(address.host, server.port)}/metrics")
    try:
        yield server
    finally:
        server.close()


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

"""``cdc run``: stream until stopped, or until an LSN is stored and acknowledged."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from types import FrameType

import click
from structlog.typing import FilteringBoundLogger

from ..dedup import DedupWindow
from ..failpoints import Failpoints
from ..logs import get_logger
from ..lsn import format_lsn, parse_lsn
from ..pipeline import Pipeline, PipelineError
from ..retain import RetainError, Retention
from ..settings import Settings
from ..sink.clickhouse import ClickHouseSink
from .options import require_clickhouse, require_pg, shared_options, with_changes

if TYPE_CHECKING:  # prometheus_client is loaded only when an endpoint is served
    from ..metrics.exporter import Address, MetricsServer


@click.command()
@shared_options
@click.option("--create-slot", is_flag=True, envvar="CDC_CREATE_SLOT", show_envvar=True,
              help="Create the slot if it is missing, first delivering the rows already in the outbox.")
@click.option("--until-lsn", envvar="CDC_UNTIL_LSN", show_envvar=True, metavar="LSN|current",
              help="Stop once everything committed up to this LSN ('current': now) is stored and acknowledged.")
@click.option("--from-lsn", envvar="CDC_FROM_LSN", show_envvar=True, metavar="LSN",
              help="Replay: deliver again everything committed after LSN that the slot still holds.")
@click.option("--from-checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="CDC_FROM_CHECKPOINT", show_envvar=True,
              help="Replay from the position in a file written by `cdc checkpoint save`.")
@click.option("--retain", envvar="CDC_RETAIN", show_envvar=True, metavar="SIZE|TIME",
              help="Replay window: acknowledge this much WAL (512MB) or time (6h) behind what is stored.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=50_000, show_default=True,
              envvar="CDC_BATCH_ROWS", show_envvar=True, help="Flush when the buffer holds this many rows.")
@click.option("--batch-bytes", type=click.IntRange(min=1), default=32 * 1024 * 1024, show_default=True,
              envvar="CDC_BATCH_BYTES", show_envvar=True, help="... or this many bytes.")
@click.option("--flush-interval", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              envvar="CDC_FLUSH_INTERVAL", show_envvar=True, help="... or its oldest row is this many seconds old.")
@click.option("--dedup-window", type=click.IntRange(min=0), default=1_000_000, show_default=True,
              envvar="CDC_DEDUP_WINDOW", show_envvar=True,
              help="How many recent unique_ids to remember exactly (0 turns deduplication off).")
@click.option("--dedup-max-age", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              envvar="CDC_DEDUP_MAX_AGE", show_envvar=True, help="Forget unique_ids older than this (seconds).")
@click.option("--max-payload-bytes", type=click.IntRange(min=1), default=1024 * 1024, show_default=True,
              envvar="CDC_MAX_PAYLOAD_BYTES", show_envvar=True,
              help="Larger payloads go to the dead-letter table.")
@click.option("--streaming/--no-streaming", default=False, show_default=True, envvar="CDC_STREAMING",
              show_envvar=True, help="Receive large transactions while still in progress (PostgreSQL 14+).")
@click.option("--spill-bytes", type=click.IntRange(min=0), default=64 * 1024 * 1024, show_default=True,
              envvar="CDC_SPILL_BYTES", show_envvar=True,
              help="Memory for in-progress streamed transactions before they spill to a temporary file.")
@click.option("--status-interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              envvar="CDC_STATUS_INTERVAL", show_envvar=True, help="Seconds between status updates to the server.")
@click.option("--retry-max", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              envvar="CDC_RETRY_MAX", show_envvar=True, help="Longest wait between retries (seconds).")
@click.option("--retry-initial", type=click.FloatRange(min=0.01), default=0.5, show_default=True,
              envvar="CDC_RETRY_INITIAL", show_envvar=True, help="First wait between retries (seconds).")
@click.option("--metrics-addr", envvar="CDC_METRICS_ADDR", show_envvar=True, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (off unless set).")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0), default=10.0, show_default=True,
              envvar="CDC_HEARTBEAT_INTERVAL", show_envvar=True,
              help="Seconds between heartbeat messages through the slot, which measure end-to-end latency "
                   "when idle (0: off; PostgreSQL 14+).")
def run(
    settings: Settings, create_slot: bool, until_lsn: str | None, from_lsn: str | None,
    from_checkpoint: Path | None, retain: str | None, metrics_addr: str | None, **tuning: Any,
) -> None:
    """Stream committed outbox rows into ClickHouse until stopped (SIGINT/SIGTERM flush, acknowledge, exit 0)."""
    settings = with_changes(
        settings,
        batch_rows=tuning["batch_rows"], batch_bytes=tuning["batch_bytes"], flush_interval=tuning["flush_interval"],
        dedup_window=tuning["dedup_window"], dedup_max_age=tuning["dedup_max_age"],
        max_payload_bytes=tuning["max_payload_bytes"], streaming=tuning["streaming"],
        spill_bytes=tuning["spill_bytes"], status_interval=tuning["status_interval"],
        retry_initial=tuning["retry_initial"], retry_max=max(tuning["retry_max"], tuning["retry_initial"]),
        heartbeat_interval=tuning["heartbeat_interval"],
    )
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
    stop = threading.Event()
    sink = ClickHouseSink(
        require_clickhouse(settings), settings.clickhouse_table, password=settings.clickhouse_password, log=log,
    )
    with ExitStack() as cleanup:
        cleanup.callback(sink.close)
        sink.ensure_schema()
        dedup = DedupWindow(capacity=settings.dedup_window, max_age=settings.dedup_max_age)
        pipeline = Pipeline(settings, sink, dedup, log, stop, failpoints=failpoints)
        if address is not None:
            cleanup.enter_context(_serve_metrics(address, log)).add(pipeline.metrics)
        _install_signal_handlers(stop, pipeline)
        summary = pipeline.run(until=until_lsn, create_slot=create_slot, from_lsn=replay_from, retention=retention)
    log.info("done", ack_lsn=format_lsn(summary.acknowledged_lsn), rows_stored=summary.rows_stored,
             dead_letters=summary.dead_letters_stored, duplicates=summary.counters.duplicates)


@contextmanager
def _serve_metrics(address: Address, log: FilteringBoundLogger) -> Iterator[MetricsServer]:
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


def _install_signal_handlers(stop: threading.Event, pipeline: Pipeline) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            # Second signal: stop retrying; whatever is not stored is not acknowledged.
            pipeline.abort()
            click.echo("cdc: stopping without flushing; unstored rows will be re-read from the slot", err=True)
            return
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)

"""``cdc run`` on a sharded outbox: this process joins the worker group and streams the shards it owns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from ..backoff import Backoff
from ..failpoints import Failpoints
from ..pg import preflight
from ..errors import PreflightError
from ..pg.connect import Conn, connect
from ..pg.shards import list_workers as read_workers
from ..pg.shards import read_sharding, streaming_generation
from ..pipeline.retain import Retention
from ..settings import Settings
from ..sink import open_sink, opened_by_one_process
from ..stopping import StopSignals
from .group import WorkerGroup
from .runner import ForkRunner, Runner, ThreadRunner
from .target import shard_target

if TYPE_CHECKING:  # prometheus_client loads only when metrics are served
    from ..metrics.exporter import MetricsServer


def is_sharded(settings: Settings) -> bool:
    with connect(settings.pg_dsn, application_name="cdc-worker") as conn:
        return read_sharding(conn, settings.outbox_schema, settings.slot) is not None


def run_worker(
    settings: Settings, signals: StopSignals, *, log: FilteringBoundLogger, failpoints: Failpoints | None,
    retention: Retention, until: str | None, max_shards: int | None, threads: bool = False,
    replay: int | dict[str, int] | None = None, metrics: MetricsServer | None = None,
) -> None:
    """Take part in the group until ``signals`` stops it (hand every shard over, then leave; on abort: give
    up what is unstored) or, with ``until``, until every shard has acknowledged it.

    ``replay`` (one LSN for every shard, or one per slot from a checkpoint) replays every shard: this worker
    must be the only one, and takes them all.

    ``metrics``: the process's endpoint, serving every shard this worker streams (each labelled with its
    slot and shard number)."""
    _check_sink(settings, log)
    until_lsn = None
    positions: dict[str, int] = {}
    with connect(settings.pg_dsn, application_name="cdc-worker") as conn:
        _preflight(conn, settings)
        if until is not None:
            # One LSN for the whole group: 'current' is read once, here.
            until_lsn = preflight.current_wal_lsn(conn) if until == "current" else _lsn(until)
        if replay is not None:
            positions = _replay_positions(conn, settings, replay, max_shards)
    target = shard_target(settings, log=log, failpoints=failpoints, retention=retention, until=until_lsn)
    runner: Runner
    if not threads and opened_by_one_process(settings.sink_url):
        # chDB opens a directory from one process at a time: shard processes would lock each other out.
        log.info("a chDB sink is opened by one process: its shards stream in threads of this one")
        threads = True
    if threads:
        runner = ThreadRunner(target, log, metrics)
    else:
        children = None
        if metrics is not None:
            from ..metrics.children import ChildMetrics

            fd = metrics.fileno()
            children = ChildMetrics(close_in_child=() if fd is None else (fd,))
            metrics.registry.register(children)
        runner = ForkRunner(target, log, children)
    group = WorkerGroup(dsn=settings.pg_dsn, schema=settings.outbox_schema, slot=settings.slot, runner=runner,
                        log=log, backoff=Backoff(settings.retry_initial, settings.retry_max), max_shards=max_shards,
                        until=until_lsn, replay=positions)
    signals.started()
    group.run(signals.stop, signals.abort)


def _preflight(conn: Conn, settings: Settings) -> None:
    """What ``cdc run`` on one slot checks before it streams, for every shard streamed now: a missing or
    changed outbox, or a shard's publication, ends the worker at start-up in one line, as it ends one slot's
    run. (The slots are each shard streamer's to check: another worker may be streaming them.)"""
    preflight.check_server(conn)
    preflight.check_outbox(conn, settings.outbox_schema, settings.outbox_table)
    generation = streaming_generation(read_sharding(conn, settings.outbox_schema, settings.slot),
                                      reshard_running=False)
    for shard in [] if generation is None else generation.shard_list():
        preflight.check_publication(conn, shard.publication, settings.outbox_schema, settings.outbox_table)


def _check_sink(settings: Settings, log: FilteringBoundLogger) -> None:
    """A wrong ClickHouse URL, user, password or TLS setting, or a server not there, ends ``cdc run`` at
    start-up in one line, as it does on one slot. (Once running, a shard streamer that cannot reach its
    sink is restarted with backoff: an outage must not end the group.)"""
    if settings.sink_url.startswith("chdb:"):
        return  # in-process, one process at a time: each shard streamer opens it, and says why it cannot
    open_sink(settings.sink_url, settings, log=log).close()


def _replay_positions(
    conn: Conn, settings: Settings, replay: int | dict[str, int], max_shards: int | None,
) -> dict[str, int]:
    """slot -> LSN for every shard of the generation streamed; PreflightError when a replay cannot be whole."""
    if max_shards is not None:
        raise PreflightError("a replay streams every shard: drop --max-shards")
    alive = [w for w in read_workers(conn, settings.outbox_schema, settings.slot) if w.alive]
    if alive:
        raise PreflightError(
            f"a replay streams every shard, but {len(alive)} worker(s) are running ({alive[0].host} pid "
            f"{alive[0].pid}...): stop them (`cdc shards show` lists them), replay, then start them again"
        )
    generation = streaming_generation(read_sharding(conn, settings.outbox_schema, settings.slot),
                                      reshard_running=False)
    if generation is None:
        raise PreflightError("no generation of shards is streaming (a reshard is under way): replay after it")
    positions = {}
    for shard in generation.shard_list():
        lsn = replay.get(shard.slot) if isinstance(replay, dict) else replay
        if lsn is None:
            raise PreflightError(f"the checkpoint holds no position for shard slot {shard.slot}: "
                                 "take a checkpoint of this generation, or replay with --from-lsn")
        info = preflight.slot_info(conn, shard.slot)
        if info is None:
            raise PreflightError(f"replication slot {shard.slot} does not exist: there is nothing to replay")
        preflight.check_replayable(info, lsn)
        positions[shard.slot] = lsn
    return positions


def _lsn(text: str) -> int:
    from ..lsn import parse_lsn

    return parse_lsn(text)

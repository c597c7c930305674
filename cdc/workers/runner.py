"""Where a worker streams the shards it owns: one forked child process per shard, or one thread per shard.

A ``ShardTarget`` streams one shard until ``stop`` is set (store what it holds,
acknowledge, return 0) or ``abort`` is set (give up what is unstored: the next
owner re-reads it from the slot), and returns its exit status. Its pipeline's
metrics go to the ``MetricsHub`` it is given, if any: with ``--metrics-addr``,
the worker's endpoint itself (threads) or the child's report to the worker
(child processes: cdc/metrics/children.py).

- ``ForkRunner``: each shard in its own process, forked from the worker (no
  interpreter start-up, no re-reading of settings), so shards use every CPU
  instead of sharing one interpreter lock. ``stop`` is SIGTERM (twice: abort),
  ``kill`` is SIGKILL: the walsender sees the socket close, and the slot is free.
  A child dies with its worker (PR_SET_PDEATHSIG), whose lock session ends at
  the same moment: a shard never streams without its owner.
- ``ThreadRunner``: every shard in the worker's own process. ``kill`` can only
  ask (abort), so it is at once only up to the write in flight.

The worker's own loop must be the only thread that forks (see ``ForkRunner``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from structlog.typing import FilteringBoundLogger

from ..metrics import MetricsHub
from ..shards.layout import Shard

if TYPE_CHECKING:  # prometheus_client loads only when metrics are served
    from multiprocessing.connection import Connection

    from ..metrics.children import ChildMetrics

ShardTarget = Callable[[Shard, threading.Event, threading.Event, MetricsHub | None], int]
# A streamer's exit status when it met what no restart mends (the outbox, a publication, the sink's
# configuration, a value ClickHouse cannot hold): the worker leaves, as one slot's `cdc run` exits.
CANNOT_GO_ON: Final = 78  # EX_CONFIG


class CannotGoOn(Exception):
    """Raised by a ShardTarget: the one line that says what to mend (the worker's own last words)."""


_PR_SET_PDEATHSIG = 1
_STOPS = {signal.SIGTERM, signal.SIGINT}


@dataclass(frozen=True, slots=True)
class Exited:
    shard: Shard
    code: int  # exit status; negative: killed by that signal
    why: str | None = None  # with CANNOT_GO_ON: what to mend


class Runner(Protocol):
    def start(self, shard: Shard) -> None: ...
    def stop(self, shard: Shard) -> None:
        """Flush, acknowledge and end; a second call gives up what is unstored."""
    def kill(self, shard: Shard) -> None:
        """End now, storing nothing more."""
    def reap(self) -> list[Exited]:
        """The shards whose streamer ended since the last call."""
    def running(self) -> list[Shard]: ...


@dataclass
class _Child:
    shard: Shard
    pid: int
    why: int  # the read end of the pipe its CannotGoOn line comes through
    stops: int = 0


class ForkRunner:
    def __init__(self, target: ShardTarget, log: FilteringBoundLogger, metrics: ChildMetrics | None = None) -> None:
        self._target = target
        self._log = log
        self._metrics = metrics
        self._children: dict[str, _Child] = {}

    def start(self, shard: Shard) -> None:
        if shard.slot in self._children:
            raise RuntimeError(f"shard {shard.slot} is already running")
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        # A stop may come at once: unblocked, it would run the worker's handler (on
        # the child's copy of the worker), and never stop. Held back across the
        # fork, and in the child for good, it waits for the child's relay thread.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        report = None if self._metrics is None else self._metrics.open(shard.slot)
        why_read, why_write = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                os.close(why_read)
                self._child(shard, parent, report, why_write)
        except BaseException:
            os.close(why_read)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            if report is not None:
                report.close()  # the child's end: the worker keeps its own
            os.close(why_write)
        self._children[shard.slot] = _Child(shard, pid, why_read)

    def _child(  # pragma: no cover - child side
        self, shard: Shard, parent: int, report: Connection[Any, Any] | None, why: int,
    ) -> None:
        code = 1
        try:
            if sys.platform.startswith("linux"):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)  # the worker died between fork and prctl
            stop, abort = threading.Event(), threading.Event()
            # The worker's wakeup pipe (cdc/stopping.py) is the worker's: a signal caught here must not
            # reach the worker's watcher as though the worker had been told to stop.
            signal.set_wakeup_fd(-1)
            # Ctrl-C reaches the whole process group: the worker decides what its shards do.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            # SIGTERM stays blocked in every thread (they inherit the mask) and one thread of its own
            # takes it with sigwait. A handler would set the event in whatever the main thread was
            # doing: inside that event's own wait, holding its lock, it deadlocks (seen: a stop lost).
            threading.Thread(target=_relay_stops, args=(stop, abort), name="cdc-stop-relay", daemon=True).start()
            hub = None if self._metrics is None or report is None else self._metrics.in_child(report)
            code = self._target(shard, stop, abort, hub)
        except CannotGoOn as exc:
            os.write(why, str(exc).encode()[:4000])  # within PIPE_BUF's one write: the worker reads it whole
            code = CANNOT_GO_ON
        except BaseException as exc:  # noqa: BLE001 - a child must end here, whatever happened
            self._log.error("shard streamer failed", slot=shard.slot, error=f"{type(exc).__name__}: {exc}")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def stop(self, shard: Shard) -> None:
        child = self._children.get(shard.slot)
        if child is not None:
            child.stops += 1
            _signal(child.pid, signal.SIGTERM)

    def kill(self, shard: Shard) -> None:
        child = self._children.get(shard.slot)
        if child is not None:
            _signal(child.pid, signal.SIGKILL)

    def reap(self) -> list[Exited]:
        out = []
        for slot, child in list(self._children.items()):
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = child.pid, 1 << 8
            if pid == 0:
                continue
            del self._children[slot]
            if self._metrics is not None:
                self._metrics.forget(slot)
            with os.fdopen(child.why, "rb") as why:
                said = why.read().decode(errors="replace") or None  # the child has exited: never blocks
            out.append(Exited(child.shard, os.waitstatus_to_exitcode(status), said))
        return out

    def running(self) -> list[Shard]:
        return [c.shard for c in self._children.values()]


def _relay_stops(stop: threading.Event, abort: threading.Event) -> None:  # pragma: no cover - child side
    """A shard child's SIGTERMs: the first sets ``stop``, the next ``abort``."""
    while True:
        signal.sigwait({signal.SIGTERM})
        (abort if stop.is_set() else stop).set()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone: reap() reports it


@dataclass
class _Thread:
    shard: Shard
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    code: list[int] = field(default_factory=lambda: [1])
    why: list[str | None] = field(default_factory=lambda: [None])


class ThreadRunner:
    def __init__(self, target: ShardTarget, log: FilteringBoundLogger, metrics: MetricsHub | None = None) -> None:
        self._target = target
        self._log = log
        self._metrics = metrics
        self._threads: dict[str, _Thread] = {}

    def start(self, shard: Shard) -> None:
        if shard.slot in self._threads:
            raise RuntimeError(f"shard {shard.slot} is already running")
        entry = _Thread(shard)
        entry.thread = threading.Thread(target=self._run, args=(entry,), name=f"cdc-shard-{shard.slot}", daemon=True)
        self._threads[shard.slot] = entry
        entry.thread.start()

    def _run(self, entry: _Thread) -> None:
        try:
            entry.code[0] = self._target(entry.shard, entry.stop, entry.abort, self._metrics)
        except CannotGoOn as exc:
            entry.code[0], entry.why[0] = CANNOT_GO_ON, str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported as the shard's exit status
            self._log.error("shard streamer failed", slot=entry.shard.slot, error=f"{type(exc).__name__}: {exc}")
            entry.code[0] = 1

    def stop(self, shard: Shard) -> None:
        entry = self._threads.get(shard.slot)
        if entry is not None:
            (entry.abort if entry.stop.is_set() else entry.stop).set()

    def kill(self, shard: Shard) -> None:
        entry = self._threads.get(shard.slot)
        if entry is not None:
            entry.stop.set()
            entry.abort.set()

    def reap(self) -> list[Exited]:
        out = []
        for slot, entry in list(self._threads.items()):
            if entry.thread is not None and not entry.thread.is_alive():
                del self._threads[slot]
                out.append(Exited(entry.shard, entry.code[0], entry.why[0]))
        return out

    def running(self) -> list[Shard]:
        return [e.shard for e in self._threads.values()]

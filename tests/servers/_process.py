"""The test suite's side of process plumbing: the product's (cdc/demo/processes.py) plus an atexit net.

Servers already die with the test process (their parent-death signal); the
registry here also kills, at interpreter exit, any server a test forgot to
stop, so an interrupted or failing run leaves nothing behind.
"""

from __future__ import annotations

import atexit
import signal
import subprocess
from typing import Any

from cdc.demo import processes
from cdc.demo.processes import (
    ChildServer,
    ServerError,
    chown_to,
    free_port,
    port_accepts,
    run,
    service_user,
    tail,
    terminate,
    user_can_traverse,
    wait_until,
    which,
)

_live: dict[int, subprocess.Popen[bytes]] = {}


def track(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        _live[proc.pid] = proc


def untrack(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        _live.pop(proc.pid, None)


def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    """The product's ``spawn``, with the child also killed at interpreter exit."""
    proc = processes.spawn(*args, **kwargs)
    track(proc)
    return proc


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live.values()):
        terminate(proc, signal.SIGKILL, timeout=5.0)


__all__ = [
    "ChildServer", "ServerError", "chown_to", "free_port", "port_accepts", "run", "service_user", "spawn", "tail",
    "terminate", "track", "untrack", "user_can_traverse", "wait_until", "which",
]

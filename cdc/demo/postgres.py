"""A PostgreSQL cluster in a directory of its own, run as our child process on a free loopback port.

initdb into ``workdir/data``, our settings appended to postgresql.conf, then
the ``postgres`` executable directly (not pg_ctl), so the postmaster is our
child and dies with us. As root it runs as an unprivileged system user (initdb
refuses root), which must be able to reach ``workdir``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlencode

import psycopg

from . import processes

SUPERUSER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_SOCKET_DIR = "sock"  # under the server's directory: its Unix socket, owned by the server's user

# What cdc needs (logical decoding), on loopback only, in UTC.
LOGICAL_SETTINGS: Mapping[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "listen_addresses": "'127.0.0.1'",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
}


def make_dsn(
    host: str, port: int, dbname: str, user: str, password: str | None, params: Mapping[str, str] | None = None
) -> str:
    """A libpq URI; every part is percent-encoded so odd passwords survive."""
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    query_params = dict(params or {})
    if host.startswith("/"):
        # A Unix socket directory cannot sit in the authority part of a URI.
        query_params["host"], host = host, ""
    query = f"?{urlencode(query_params)}" if query_params else ""
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}{query}"


class LocalPostgres(processes.ChildServer):
    """One cluster under ``workdir``: ``init()``, ``start()``, ``stop()``, ``destroy()``.

    With a ``password`` the superuser must give it, locally and over TCP
    (scram-sha-256). Without one, local and superuser connections are trusted
    as ``hba`` says: for test clusters only.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        bin_dir: Path,
        workdir: Path,
        *,
        run_as: str | None,
        settings: Mapping[str, str] = LOGICAL_SETTINGS,
        password: str | None = None,
        hba: str | None = None,
    ) -> None:
        self.bin_dir = bin_dir
        self.base_dir = workdir
        self.data_dir = workdir / "data"
        self.socket_dir = workdir / _SOCKET_DIR
        self.log_path = workdir / "postgres.log"
        self.port = processes.free_port()
        self.major = 0
        self.run_as = run_as
        self.password = password
        self._settings = dict(settings)
        self._hba = hba
        self._proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """A URI for ``user`` (the superuser's password is filled in unless another is given)."""
        if password is None and user == SUPERUSER:
            password = self.password
        return make_dsn(self.host, self.port, dbname, user, password)

    def init(self) -> None:
        processes.server_dirs(self.base_dir, [_SOCKET_DIR], self.run_as)
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256"]
        pwfile = self.base_dir / "initdb.pw"
        if self.password is not None:
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            processes.chown_to(pwfile, self.run_as)
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            processes.run(
                [
                    str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, *auth,
                    "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
                ],
                user=self.run_as,
                env=self._env(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.major = int((self.data_dir / "PG_VERSION").read_text().strip())
        settings = {**self._settings, "port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'"}
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# written by cdc\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        if self._hba is not None:
            (self.data_dir / "pg_hba.conf").write_text(self._hba)

    def start(self) -> None:
        if self.running:
            return
        self._proc = processes.spawn(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
            log=self.log_path,
            user=self.run_as,
            env=self._env(),
            cwd=self.base_dir,
            # Immediate shutdown also takes the backends down with it.
            death_signal=signal.SIGQUIT,
        )
        processes.chown_to(self.log_path, self.run_as)
        processes.wait_until(
            self._accepts_connections,
            proc=self._proc,
            timeout=START_TIMEOUT,
            what=f"PostgreSQL on port {self.port}",
            log_tail=lambda: processes.tail(self.log_path),
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "smart" waits for clients, "fast" disconnects them, "immediate" skips the checkpoint."""
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {sorted(_STOP_SIGNALS)}, not {mode!r}")
        if self._proc is None:
            return
        processes.terminate(self._proc, _STOP_SIGNALS[mode], timeout=STOP_TIMEOUT)
        self._proc = None

    def destroy(self) -> None:
        """Stop at once and remove the cluster's directory."""
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop("fast")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _env(self) -> dict[str, str]:
        # No PG* variables from the caller: a stray PGDATA or PGPORT must not
        # redirect initdb or the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        env["TZ"] = "UTC"
        return env

    def __repr__(self) -> str:
        # Never the password: a repr ends up in tracebacks and logs.
        return f"{type(self).__name__}(major={self.major}, port={self.port}, data_dir={str(self.data_dir)!r})"

"""A local ``clickhouse-server`` (when one is installed) in a directory of its own, as our child process.

The configuration is generated: loopback only, free ports, every path under
``workdir``, small caches. It uses the ``<yandex>`` root element, which every
release from Debian's 18.16 to current ones reads. Users live in users.xml,
which the server re-reads by itself every couple of seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from . import processes

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
ADMIN_USER = "default"
_DIRECTORIES = ("data", "tmp", "user_files", "format_schemas")

_CONFIG = """\
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{base}/clickhouse-server.log</log>
        <errorlog>{base}/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{base}/data/</path>
    <tmp_path>{base}/tmp/</tmp_path>
    <user_files_path>{base}/user_files/</user_files_path>
    <format_schema_path>{base}/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_connections>1024</max_connections>
    <max_concurrent_queries>200</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
    <!-- The stock 5 GiB/8 GiB caches are sized for a production server, not one machine shared with the rest. -->
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
"""

_USERS = """\
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
{users}
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
"""


def user_xml(name: str, password: str, databases: list[str] | None = None, readonly: bool = False) -> str:
    """One users.xml entry; the password is stored as its SHA-256, never as written."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"user name must be alphanumeric/underscore (it becomes an XML tag): {name!r}")
    secret = f"<password_sha256_hex>{hashlib.sha256(password.encode()).hexdigest()}</password_sha256_hex>"
    if not password:
        secret = "<password></password>"
    allow = ""
    if databases is not None:
        allow = "<allow_databases>" + "".join(f"<database>{escape(d)}</database>" for d in databases) + "</allow_databases>"
    return (
        f"        <{name}>{secret}"
        "<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"
        f"<profile>{'readonly' if readonly else 'default'}</profile><quota>default</quota>{allow}</{name}>"
    )


def find_binary() -> list[str] | None:
    """The command that starts a server: Debian's ``clickhouse-server`` or the upstream single binary; else None."""
    found = processes.which("clickhouse-server", "/usr/sbin/clickhouse-server")
    if found:
        return [found]
    found = processes.which("clickhouse", "/usr/bin/clickhouse")
    if found:
        return [found, "server"]
    return None


def make_url(host: str, port: int, database: str, user: str, password: str | None) -> str:
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return f"clickhouse://{auth}@{host}:{port}/{quote(database, safe='')}"


class LocalClickHouse(processes.ChildServer):
    """One server under ``workdir`` on free loopback ports: ``init()``, ``start()``, ``stop()``, ``destroy()``."""

    host = "127.0.0.1"

    def __init__(self, command: list[str], workdir: Path, *, run_as: str | None = None, password: str = "") -> None:
        self.command = command
        self.base_dir = workdir
        self.config_path = workdir / "config.xml"
        self.users_path = workdir / "users.xml"
        self.log_path = workdir / "clickhouse-server.log"
        self.err_log_path = workdir / "clickhouse-server.err.log"
        self.stdout_path = workdir / "stdout.log"
        self.run_as = run_as
        self.password = password
        self.port = processes.free_port()
        self.http_port = processes.free_port()
        while self.http_port == self.port:
            self.http_port = processes.free_port()
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "default", user: str = ADMIN_USER, password: str | None = None) -> str:
        """A ``clickhouse://`` URL for cdc (the admin's password is filled in unless another is given)."""
        if password is None and user == ADMIN_USER:
            password = self.password
        return make_url(self.host, self.port, database, user, password)

    def client(self, database: str = "default", user: str = ADMIN_USER, password: str | None = None) -> Client:
        if password is None and user == ADMIN_USER:
            password = self.password
        return Client(self.host, port=self.port, database=database, user=user, password=password or "",
                      connect_timeout=5)

    def execute(self, query: str, params: Any = None, database: str = "default") -> Any:
        """Run one query as the admin user: rows for SELECT, a count for INSERT."""
        client = self.client(database)
        try:
            return client.execute(query, params)
        finally:
            client.disconnect()

    def init(self) -> None:
        processes.server_dirs(self.base_dir, _DIRECTORIES, self.run_as)
        self.config_path.write_text(
            _CONFIG.format(base=escape(str(self.base_dir)), tcp_port=self.port, http_port=self.http_port)
        )
        self.write_users()

    def start(self) -> None:
        if self.running:
            return
        self._proc = processes.spawn(
            [*self.command, f"--config-file={self.config_path}"],
            log=self.stdout_path,
            user=self.run_as,
            cwd=self.base_dir,
        )
        processes.wait_until(
            self._answers,
            proc=self._proc,
            timeout=START_TIMEOUT,
            what=f"ClickHouse on port {self.port}",
            log_tail=self.log_tail,
        )
        self.version = str(self.execute("SELECT version()")[0][0])

    def stop(self) -> None:
        if self._proc is None:
            return
        processes.terminate(self._proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalClickHouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    # -- users.xml ------------------------------------------------------------

    def user_entries(self) -> list[str]:
        """The users.xml entries to write; subclasses add their own users."""
        return [user_xml(ADMIN_USER, self.password)]

    def write_users(self) -> None:
        # Write-then-rename so the reloader never parses a half-written file.
        staging = self.users_path.with_suffix(".xml.new")
        staging.write_text(_USERS.format(users="\n".join(self.user_entries())))
        # 18.16 notices a change by the file's mtime in whole seconds: a second
        # write within the same second would never be reloaded. Give every
        # version a later whole second than the one before.
        previous = int(self.users_path.stat().st_mtime) if self.users_path.exists() else 0
        stamp = max(int(time.time()), previous + 1)
        os.utime(staging, (stamp, stamp))
        os.replace(staging, self.users_path)

    # -- internals --------------------------------------------------------------

    def _answers(self) -> bool:
        # A bare TCP probe first: the driver logs a traceback for every refused connection.
        if not processes.port_accepts(self.port):
            return False
        client = Client(self.host, port=self.port, user=ADMIN_USER, password=self.password,
                        connect_timeout=1, send_receive_timeout=5)
        try:
            client.execute("SELECT 1")
        except (ch_errors.Error, OSError, EOFError):
            return False
        finally:
            client.disconnect()
        return True

    def log_tail(self) -> str:
        return "\n".join(processes.tail(path) for path in (self.stdout_path, self.err_log_path, self.log_path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r}, port={self.port}, http_port={self.http_port})"

"""A real ClickHouse server, run as a child process for the test session.

Debian ships ClickHouse 18.16, which predates SQL user management (CREATE
USER came in 20.x): users live in users.xml, which the server re-reads by
itself every couple of seconds, so `add_user` rewrites it and waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from . import _process

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
ADMIN_USER = "default"

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
    <!-- The stock 5 GiB/8 GiB caches are sized for production, not a shared test box. -->
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


def _user_xml(name: str, password: str, databases: list[str] | None, readonly: bool) -> str:
    allow = ""
    if databases is not None:
        allow = "<allow_databases>" + "".join(f"<database>{escape(d)}</database>" for d in databases) + "</allow_databases>"
    return (
        f"        <{name}>"
        f"<password>{escape(password)}</password>"
        "<networks><ip>::/0</ip></networks>"
        f"<profile>{'readonly' if readonly else 'default'}</profile>"
        "<quota>default</quota>"
        f"{allow}"
        f"</{name}>"
    )


def find_binary() -> list[str] | None:
    """The command that starts a server: Debian's or the upstream single binary."""
    found = _process.which("/usr/sbin/clickhouse-server", "clickhouse-server")
    if found:
        return [found]
    found = _process.which("/usr/bin/clickhouse", "clickhouse")
    if found:
        return [found, "server"]
    return None


def make_url(host: str, port: int, database: str, user: str, password: str | None) -> str:
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return f"clickhouse://{auth}@{host}:{port}/{quote(database, safe='')}"


class ClickHouseServer(_process.ChildServer):
    """One ClickHouse server in a temp dir, on free loopback ports."""

    can_restart = True
    host = "127.0.0.1"

    def __init__(self, command: list[str], workdir: Path) -> None:
        self.command = command
        self.base_dir = workdir
        self.config_path = workdir / "config.xml"
        self.users_path = workdir / "users.xml"
        self.log_path = workdir / "clickhouse-server.log"
        self.err_log_path = workdir / "clickhouse-server.err.log"
        self.stdout_path = workdir / "stdout.log"
        self.port = _process.free_port()
        self.http_port = _process.free_port()
        while self.http_port == self.port:
            self.http_port = _process.free_port()
        self.version = ""
        # name -> (users.xml fragment, password)
        self._users: dict[str, tuple[str, str]] = {ADMIN_USER: (_user_xml(ADMIN_USER, "", None, False), "")}
        self._proc: subprocess.Popen[bytes] | None = None

    # -- connection strings -------------------------------------------------

    def url(self, database: str = "default", user: str = ADMIN_USER, password: str | None = None) -> str:
        return make_url(self.host, self.port, database, user, password)

    def client(self, database: str = "default", user: str = ADMIN_USER, password: str = "") -> Client:
        return Client(self.host, port=self.port, database=database, user=user, password=password, connect_timeout=5)

    def execute(self, query: str, params: Any = None, database: str = "default") -> Any:
        """Run one query as the admin user: rows for SELECT, a count for INSERT."""
        client = self.client(database)
        try:
            return client.execute(query, params)
        finally:
            client.disconnect()

    # -- lifecycle ----------------------------------------------------------

    def init(self) -> None:
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            _CONFIG.format(base=escape(str(self.base_dir)), tcp_port=self.port, http_port=self.http_port)
        )
        self._write_users()

    def start(self) -> None:
        if self.running:
            return
        self._proc = _process.spawn(
            [*self.command, f"--config-file={self.config_path}"],
            log=self.stdout_path,
            user=None,
            cwd=self.base_dir,
        )
        _process.wait_until(
            self._answers,
            proc=self._proc,
            timeout=START_TIMEOUT,
            what=f"ClickHouse on port {self.port}",
            log_tail=self._log_tail,
        )
        self.version = str(self.execute("SELECT version()")[0][0])

    def stop(self) -> None:
        if self._proc is None:
            return
        _process.terminate(self._proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- users --------------------------------------------------------------

    def add_user(
        self, name: str, password: str = "", *, databases: list[str] | None = None, readonly: bool = False
    ) -> None:
        """Create or replace a user and wait until it can log in.

        `databases` limits which databases it may use (None: all).
        """
        if not name.replace("_", "").isalnum():
            raise ValueError(f"user name must be alphanumeric/underscore (it becomes an XML tag): {name!r}")
        self._users[name] = (_user_xml(name, password, databases, readonly), password)
        self._write_users()
        self._wait_for_login(name, password, should_work=True)

    def remove_user(self, name: str) -> None:
        if name == ADMIN_USER:
            raise ValueError("the admin user stays")
        removed = self._users.pop(name, None)
        if removed is not None:
            self._write_users()
            self._wait_for_login(name, removed[1], should_work=False)

    def _write_users(self) -> None:
        # Write-then-rename so the reloader never parses a half-written file.
        staging = self.users_path.with_suffix(".xml.new")
        staging.write_text(_USERS.format(users="\n".join(xml for xml, _ in self._users.values())))
        # 18.16 notices a change by the file's mtime in whole seconds: a second
        # write within the same second would never be reloaded. Give every
        # version a later whole second than the one before.
        previous = int(self.users_path.stat().st_mtime) if self.users_path.exists() else 0
        stamp = max(int(time.time()), previous + 1)
        os.utime(staging, (stamp, stamp))
        os.replace(staging, self.users_path)

    def _wait_for_login(self, name: str, password: str, *, should_work: bool) -> None:
        # The config reloader polls every 2 s in 18.16; allow several rounds.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client = Client(self.host, port=self.port, user=name, password=password, connect_timeout=5)
            try:
                client.execute("SELECT 1")
                works = True
            except ch_errors.ServerException:
                works = False
            finally:
                client.disconnect()
            if works == should_work:
                return
            time.sleep(0.2)
        state = "log in" if should_work else "be refused"
        raise RuntimeError(f"ClickHouse user {name!r} did not {state} within 30s\n{self._log_tail()}")

    # -- internals ----------------------------------------------------------

    def _answers(self) -> bool:
        # A bare TCP probe first: the driver logs a traceback for every
        # refused connection, which would flood captured test output.
        if not _process.port_accepts(self.port):
            return False
        client = Client(self.host, port=self.port, connect_timeout=1, send_receive_timeout=5)
        try:
            client.execute("SELECT 1")
        except (ch_errors.Error, OSError, EOFError):
            return False
        finally:
            client.disconnect()
        return True

    def _log_tail(self) -> str:
        return "\n".join(_process.tail(path) for path in (self.stdout_path, self.err_log_path, self.log_path))

    def __repr__(self) -> str:
        return f"ClickHouseServer(version={self.version!r}, port={self.port}, http_port={self.http_port})"


def start_clickhouse(workdir: Path) -> ClickHouseServer:
    """Generate a config under `workdir` (created if needed) and start a server."""
    command = find_binary()
    if command is None:
        raise RuntimeError("clickhouse-server is not installed (apt-get install clickhouse-server clickhouse-client)")
    server = ClickHouseServer(command, Path(workdir))
    server.init()
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server

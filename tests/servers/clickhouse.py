"""A real ClickHouse server, run as a child process for the test session.

The product's LocalClickHouse (cdc/demo/clickhouse.py: generated config, free
loopback ports, our child process) plus users the tests add and remove.
Debian ships ClickHouse 18.16, which predates SQL user management (CREATE USER
came in 20.x): users live in users.xml, which the server re-reads by itself
every couple of seconds, so `add_user` rewrites it and waits.
"""

from __future__ import annotations

import time
from pathlib import Path

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from cdc.demo.clickhouse import ADMIN_USER, LocalClickHouse, find_binary, user_xml

from . import _process


class ClickHouseServer(LocalClickHouse):
    """One ClickHouse server in a temp dir, on free loopback ports; the admin user has no password."""

    can_restart = True

    def __init__(self, command: list[str], workdir: Path) -> None:
        super().__init__(command, workdir)
        # name -> (users.xml entry, password)
        self._users: dict[str, tuple[str, str]] = {ADMIN_USER: (user_xml(ADMIN_USER, ""), "")}

    def start(self) -> None:
        super().start()
        _process.track(self._proc)

    def stop(self) -> None:
        _process.untrack(self._proc)
        super().stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- users --------------------------------------------------------------

    def user_entries(self) -> list[str]:
        return [entry for entry, _ in self._users.values()]

    def add_user(
        self, name: str, password: str = "", *, databases: list[str] | None = None, readonly: bool = False
    ) -> None:
        """Create or replace a user and wait until it can log in.

        `databases` limits which databases it may use (None: all).
        """
        self._users[name] = (user_xml(name, password, databases, readonly), password)
        self.write_users()
        self._wait_for_login(name, password, should_work=True)

    def remove_user(self, name: str) -> None:
        if name == ADMIN_USER:
            raise ValueError("the admin user stays")
        removed = self._users.pop(name, None)
        if removed is not None:
            self.write_users()
            self._wait_for_login(name, removed[1], should_work=False)

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
        raise RuntimeError(f"ClickHouse user {name!r} did not {state} within 30s\n{self.log_tail()}")


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


__all__ = ["ClickHouseServer", "find_binary", "start_clickhouse"]

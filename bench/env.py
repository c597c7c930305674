"""Servers and measured child processes for the benchmark.

The servers are the test suite's own (tests/servers): PostgreSQL and ClickHouse
started as child processes on free ports, dying with us. Every program we time
(``cdc run``, ``pg_recvlogical``, the polling relay) runs as a child process, so
that its wall time and CPU time come from the kernel (``wait4``) and its peak
RSS from its own ``/proc/PID/status``, rather than from the benchmark's process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
_TESTS = ROOT / "tests"
if str(_TESTS) not in sys.path:
    sys.path.append(str(_TESTS))

from servers import make_server_root, start_postgres  # noqa: E402
from servers import start_clickhouse as start_clickhouse  # noqa: E402  (re-exported for bench.restart)
from servers.clickhouse import ClickHouseServer  # noqa: E402
from servers.postgres import PostgresServer, create_database, drop_database  # noqa: E402
from support import Target as Target  # noqa: E402  (re-exported)

CDC = [sys.executable, "-m", "cdc"]
PYTHON_M = [sys.executable, "-m"]


class BenchError(Exception):
    """A scenario could not produce a trustworthy number (a child failed, rows went missing)."""


class Servers:
    """One PostgreSQL of `kind` and one ClickHouse, in a fresh directory, for the whole run."""

    def __init__(self, pg_kind: str) -> None:
        self.root = make_server_root()
        self.pg: PostgresServer | None = None
        self.ch: ClickHouseServer | None = None
        try:
            self.pg = start_postgres(pg_kind, self.root / pg_kind)
            self.ch = start_clickhouse(self.root / "clickhouse")
        except BaseException:
            self.close()
            raise
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.cdc = measured_cdc(self.root)

    @property
    def postgres(self) -> PostgresServer:
        assert self.pg is not None
        return self.pg

    @property
    def clickhouse(self) -> ClickHouseServer:
        assert self.ch is not None
        return self.ch

    def database(self, name: str, clickhouse_params: str = "") -> Target:
        """A fresh PostgreSQL database; the ClickHouse database of the same name is created by cdc.

        ``clickhouse_params`` (``compression=none``...) is appended to the URL cdc gets.
        """
        self.drop(name)
        create_database(self.postgres, name)
        url = self.clickhouse.url(name)
        return Target(self.postgres.dsn(name), f"{url}?{clickhouse_params}" if clickhouse_params else url)

    def drop(self, name: str) -> None:
        drop_database(self.postgres, name)
        self.clickhouse.execute(f"DROP DATABASE IF EXISTS {name}")

    def cpu_groups(self) -> dict[str, int | None]:
        """The servers' root processes, for CpuMeter: their trees are our PostgreSQL and ClickHouse."""
        return {"postgres": self.postgres.pid, "clickhouse": self.clickhouse.pid}

    def pg_env(self) -> dict[str, str]:
        """Environment for PostgreSQL client binaries: no stray PG* variable may redirect them."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        return env

    def close(self) -> None:
        for server in (self.ch, self.pg):
            if server is not None:
                try:
                    server.destroy()
                except Exception:  # noqa: BLE001 - tear down the rest anyway
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


# -- measured children ---------------------------------------------------------------------------


@dataclass
class ChildResult:
    argv: list[str]
    returncode: int
    seconds: float
    user_s: float
    sys_s: float
    maxrss_bytes: int
    log: Path
    rss_samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> ChildResult:
        if self.returncode != 0:
            raise BenchError(f"{' '.join(self.argv[:4])} ... exited {self.returncode}\n{self.log_tail()}")
        return self


def _vm_status(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of a live process, in bytes."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


class Child:
    """A child process timed from spawn to exit; its rusage comes from wait4 on its pid alone."""

    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str] | None, log: Path, cwd: Path | None = None,
        rss_pid: int | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self._out: IO[bytes] = open(log, "ab")  # noqa: SIM115 - the child writes to it until wait()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.rss_pid = rss_pid

    def running(self) -> bool:
        return self.proc.returncode is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.running():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float, *, rss_every: float = 0.5, hwm_every: float = 0.1) -> ChildResult:
        deadline = self.started + timeout
        samples: list[tuple[float, int]] = []
        next_sample = next_hwm = 0.0
        peak = 0
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            now = time.monotonic()
            if pid:
                break
            if now >= next_hwm:
                rss, hwm = _vm_status(self.rss_pid or self.pid)
                peak = max(peak, hwm or 0)
                next_hwm = now + hwm_every
                if now >= next_sample and rss is not None:
                    samples.append((round(now - self.started, 3), rss))
                    next_sample = now + rss_every
            if now > deadline:
                self.proc.kill()
                self.proc.wait()
                self._out.close()
                raise BenchError(f"{' '.join(self.argv[:4])} ... did not finish within {timeout:.0f}s; log: {self.log}")
            time.sleep(0.005)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._out.close()
        # Not wait4's ru_maxrss: Linux carries it across fork and exec, so a child
        # spawned by a bench process that had grown to 200 MB reported 200 MB
        # whatever it used itself. VmHWM belongs to the child's own address space
        # (a peak in its last 0.1 s would be missed; a process that never lived
        # 0.1 s falls back to ru_maxrss).
        return ChildResult(
            argv=self.argv, returncode=self.proc.returncode, seconds=now - self.started,
            user_s=usage.ru_utime, sys_s=usage.ru_stime, maxrss_bytes=peak or usage.ru_maxrss * 1024, log=self.log,
            rss_samples=samples,
        )

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()
        if not self._out.closed:
            self._out.close()


# -- who else used the CPUs ------------------------------------------------------------------------


def _machine_jiffies() -> tuple[int, int]:
    """(busy, steal) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def _tree_cpu_s(pid: int | None = None) -> float:
    """CPU seconds of a process (default: this one) and every descendant, including those they have reaped."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in tree:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """How much CPU the rest of the machine took while a section ran (others' tests skew every number).

    foreign_cores = (machine busy time - our process tree's CPU time) / wall time;
    0 means nobody else ran; 1 means another process took a whole CPU on average.
    ``groups`` (name -> pid) also measures the CPU seconds of those process trees
    (the PostgreSQL postmaster with its backends, ClickHouse) over the section.
    """

    def __init__(self, groups: dict[str, int | None] | None = None) -> None:
        self._groups = {name: pid for name, pid in (groups or {}).items() if pid is not None}
        self.groups_cpu_s: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._hz = os.sysconf("SC_CLK_TCK")
        self._t0 = time.monotonic()
        self._busy0, self._steal0 = _machine_jiffies()
        self._ours0 = _tree_cpu_s()
        self._groups0 = {name: _tree_cpu_s(pid) for name, pid in self._groups.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self._t0, 1e-9)
        busy, steal = _machine_jiffies()
        machine = (busy - self._busy0) / self._hz
        ours = _tree_cpu_s() - self._ours0
        self.wall_s = wall
        self.machine_cores = machine / wall
        self.our_cores = ours / wall
        self.foreign_cores = max(0.0, (machine - ours) / wall)
        self.steal_cores = (steal - self._steal0) / self._hz / wall
        self.groups_cpu_s = {name: _tree_cpu_s(pid) - self._groups0[name] for name, pid in self._groups.items()}

    def as_dict(self) -> dict[str, Any]:
        return {"machine_cores": round(self.machine_cores, 2), "our_cores": round(self.our_cores, 2),
                "foreign_cores": round(self.foreign_cores, 2), "steal_cores": round(self.steal_cores, 2),
                "servers_cpu_s": {name: round(v, 3) for name, v in self.groups_cpu_s.items()}}


# -- which cdc is measured ------------------------------------------------------------------------


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True)
    return result.stdout.decode().rstrip()


def snapshot_cdc(ref: str, dest: Path) -> tuple[str, Path]:
    """Lay out the cdc package of commit `ref` under dest/site, as an installed (non-editable) copy.

    The working tree changes under a long run when others commit; a snapshot
    pins what is measured to one commit. Put dest/site on PYTHONPATH (and run
    from a directory without a cdc/ of its own) to use it. The package layout
    (sql/ -> cdc._sql and so on) is read from that commit's pyproject.toml.
    """
    import tomllib

    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    src, site = dest / "src", dest / "site"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    config = tomllib.loads((src / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
    shutil.copytree(src / "cdc", site / "cdc")
    for package, directory in config.get("package-dir", {}).items():
        shutil.copytree(src / directory, site.joinpath(*package.split(".")), dirs_exist_ok=True)
    _build_accelerator(src, site)
    return sha, site


def _build_accelerator(src: Path, site: Path) -> None:
    """Build the commit's compiled accelerator, if it has one, as ``pip install`` would: without it a
    snapshot would measure the pure-Python path that only a machine without a compiler runs."""
    if not (src / "setup.py").exists():
        return  # a commit from before the accelerator
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=src,
                           capture_output=True, text=True)
    if build.returncode != 0:
        print(f"bench: warning: the accelerator of this snapshot did not build; it runs pure Python\n"
              f"{build.stderr[-1500:]}", file=sys.stderr)
        return
    for built in (src / "cdc").glob("_accel*.so"):
        shutil.copy2(built, site / "cdc" / built.name)


def measured_cdc(cwd: Path) -> dict[str, str]:
    """Compile the cdc that the children will import (from ``cwd``, with this environment's PYTHONPATH) to
    bytecode, as ``pip install`` does, and say where it is and whether its accelerator is in use.

    Without this, a machine with PYTHONDONTWRITEBYTECODE set (this one has it) compiles every cdc
    module from source in every child: about 0.15 s of CPU per `cdc run`, charged to the pipeline."""
    code = ("import compileall, json, os, cdc; from cdc.accel import accelerator_status; "
            "path = os.path.dirname(cdc.__file__); compileall.compile_dir(path, quiet=1); "
            "print(json.dumps({'path': path, 'accelerator': accelerator_status()}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:  # a commit from before cdc.accel
        done = subprocess.run([sys.executable, "-c", code.replace("from cdc.accel import accelerator_status; ", "")
                               .replace("accelerator_status()", "'none (before cdc.accel)'")],
                              cwd=cwd, capture_output=True, text=True, check=True)
    measured: dict[str, str] = json.loads(done.stdout)
    print(f"bench: measuring cdc at {measured['path']} (accelerator: {measured['accelerator']})", file=sys.stderr)
    return measured


# -- PostgreSQL helpers --------------------------------------------------------------------------


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def wal_lsn(conn: psycopg.Connection[Any]) -> int:
    """The server's current WAL insert position, as a byte offset."""
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def confirmed_lsn(conn: psycopg.Connection[Any], slot: str) -> int | None:
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def settle(conn: psycopg.Connection[Any], *tables: str) -> None:
    """Vacuum and analyze the given tables, then checkpoint.

    Run before a drain is timed, so that autovacuum of a freshly loaded table
    does not write WAL that would be charged to the drain, and every drain
    starts from the same place: right after a checkpoint (full-page writes on).
    """
    for table in tables:
        conn.execute(f"VACUUM (ANALYZE) {table}")
    conn.execute("CHECKPOINT")


def clickhouse_rows(servers: Servers, database: str, table: str = "events_cdc_progress") -> int:
    rows = servers.clickhouse.execute(f"SELECT count() FROM {database}.{table}")
    return int(rows[0][0])


_CLICKHOUSE_EVENTS = ("InsertQuery", "DelayedInserts", "DelayedInsertsMilliseconds", "MergedRows", "Merge")


def clickhouse_events(servers: Servers) -> dict[str, int]:
    """Server-wide ClickHouse counters: how many INSERTs, how many were delayed for too many parts, merges."""
    names = ", ".join(f"'{name}'" for name in _CLICKHOUSE_EVENTS)
    rows = servers.clickhouse.execute(f"SELECT event, value FROM system.events WHERE event IN ({names})")
    counts = dict.fromkeys(_CLICKHOUSE_EVENTS, 0)
    counts.update({str(name): int(value) for name, value in rows})
    return counts


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


def autovacuums(conn: psycopg.Connection[Any], table: str) -> int:
    """How many times autovacuum and autoanalyze have processed `table` so far."""
    row = conn.execute(
        "SELECT autovacuum_count + autoanalyze_count FROM pg_stat_user_tables WHERE relname = %s", (table,)
    ).fetchone()
    return int(row[0]) if row else 0


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        raise BenchError(f"{' '.join(map(str, result.args[:4]))} ... exited {result.returncode}\n{result.stderr[-3000:]}")
    return result

"""Tools the fault tests share: a writer that keeps committing, a watched ``cdc run``, exact checks.

Everything here drives real servers and the real ``cdc`` command; nothing is mocked.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

import orjson
import psycopg
from support import CDC, SLOTS, Position, Target, high_water_mark, parse_lsn_text, slot_args, wait_until

# A fixed seed makes a failing run reproducible; CDC_FAULT_SEED picks another.
SEED = int(os.environ.get("CDC_FAULT_SEED", "20240605"))


def fault_rng(salt: str) -> random.Random:
    return random.Random(f"{SEED}:{salt}")


class Writer(threading.Thread):
    """Commits outbox transactions until stopped; some are rolled back on purpose.

    It survives the server going away: a transaction whose COMMIT got no answer
    is "in doubt", and is settled after reconnecting by looking for its rows
    (a transaction is atomic: all of its rows are there, or none).
    """

    def __init__(
        self, t: Target, prefix: str, *, seed: str, max_rows: int = 20, rollback_every: int = 7,
        pause: float = 0.005, payload_bytes: int = 40,
    ) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.t = t
        self.prefix = prefix
        self.rng = fault_rng(seed)
        self.max_rows = max_rows
        self.rollback_every = rollback_every
        self.pause = pause
        self.pad = "p" * payload_bytes
        self.committed: list[str] = []
        self.rolled_back: list[str] = []
        self.in_doubt = 0
        self.errors = 0
        self.transactions = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.failure: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join(120)
        assert not self.is_alive(), "the writer did not stop"
        if self.failure is not None:
            raise self.failure

    @property
    def committed_count(self) -> int:
        with self._lock:
            return len(self.committed)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.failure = exc

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        n = 0
        while not self._halt.is_set():
            if conn is None or conn.closed:
                conn = self._connect()
                if conn is None:
                    continue
            n += 1
            ids = [f"{self.prefix}{n}-{r}" for r in range(self.rng.randint(1, self.max_rows))]
            rollback = n % self.rollback_every == 0
            try:
                self._insert(conn, ids, rollback)
            except psycopg.OperationalError:
                self.errors += 1
                conn = None
                self._settle(ids, rollback)
                continue
            with self._lock:
                (self.rolled_back if rollback else self.committed).extend(ids)
            self.transactions += 1
            if self.pause:
                self._halt.wait(self.pause)
        if conn is not None:
            conn.close()

    def _insert(self, conn: psycopg.Connection[tuple[object, ...]], ids: list[str], rollback: bool) -> None:
        with conn.transaction(force_rollback=rollback):
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO outbox (unique_id, event_type, environment, payload) "
                    "VALUES (%s, 'fault', 'test', jsonb_build_object('uid', %s::text, 'pad', %s::text))",
                    [(uid, uid, self.pad) for uid in ids],
                )

    def _connect(self) -> psycopg.Connection[tuple[object, ...]] | None:
        try:
            return psycopg.connect(self.t.pg_dsn, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            time.sleep(0.1)
            return None

    def _settle(self, ids: list[str], rollback: bool) -> None:
        """The connection broke mid-transaction: find out whether it committed."""
        self.in_doubt += 1
        deadline = time.monotonic() + 120
        while True:
            if time.monotonic() > deadline:
                raise AssertionError("PostgreSQL did not come back within 120s")
            conn = self._connect()
            if conn is None:
                continue
            try:
                with conn:
                    found = conn.execute(
                        "SELECT count(*) FROM outbox WHERE unique_id = ANY(%s)", (ids,)
                    ).fetchone()[0]  # type: ignore[index]
            except psycopg.OperationalError:
                continue
            assert found in (0, len(ids)), f"a transaction half committed: {found} of {len(ids)} rows"
            with self._lock:
                (self.committed if found and not rollback else self.rolled_back).extend(ids)
                assert not (found and rollback), "a rolled-back transaction committed"
            return


class CdcProcess:
    """A ``cdc`` subprocess whose logs are read as they come, and whose memory is watched."""

    def __init__(self, t: Target, *args: str, **extra_env: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*CDC, *args], env=t.env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.pid = self.proc.pid
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.peak_rss_kb = 0
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._watch_memory, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def _watch_memory(self) -> None:
        while self.proc.poll() is None:
            self.sample_rss()
            time.sleep(0.1)

    def sample_rss(self) -> int:
        """VmHWM: the most resident memory the process has ever had, in kB."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        return self.peak_rss_kb

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    @property
    def output(self) -> str:
        return "\n".join(self.stdout_lines + self.stderr_lines)

    def events(self, name: str | None = None) -> list[dict[str, object]]:
        """The JSON log records seen so far (optionally only those whose event is ``name``)."""
        found = []
        for line in list(self.stderr_lines):
            if not line.startswith("{"):
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if name is None or record.get("event") == name:
                found.append(record)
        return found

    def wait_for(self, event: str, timeout: float = 60, count: int = 1) -> dict[str, object]:
        def seen() -> bool:
            if self.proc.poll() is not None and len(self.events(event)) < count:
                raise AssertionError(f"cdc exited {self.proc.returncode} before logging {event!r}:\n{self.tail()}")
            return len(self.events(event)) >= count

        wait_until(seen, timeout, f"cdc to log {event!r}", interval=0.05)
        return self.events(event)[count - 1]

    def kill(self) -> None:
        self.sample_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._join()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (flush, acknowledge, exit); returns the exit code."""
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"cdc did not stop within {timeout}s:\n{self.tail()}") from None
        self._join()
        return code

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"cdc did not finish within {timeout}s:\n{self.tail()}") from None
        self._join()
        return code

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr_lines[-lines:])


def slot_pid(t: Target, slot: str = "cdc_outbox") -> int | None:
    """The walsender streaming the slot (sharded: one of its shards', None once none is)."""
    with t.pg() as conn:
        row = conn.execute(f"SELECT min(active_pid) {SLOTS}", slot_args(slot)).fetchone()
    return None if row is None else row[0]  # type: ignore[return-value]


def wait_slot_released(t: Target, timeout: float = 30, slot: str = "cdc_outbox") -> None:
    """After a kill the server ends the old walsender once it sees the socket close."""
    wait_until(lambda: slot_pid(t, slot) is None, timeout, "the killed run's walsender to release the slot", 0.05)


def outbox_ids(t: Target) -> list[str]:
    with t.pg() as conn:
        return [str(r[0]) for r in conn.execute("SELECT unique_id FROM outbox").fetchall()]


def assert_exactly(t: Target, expected: Iterable[str], *, table: str = "events") -> int:
    """Every expected id was inserted into ClickHouse exactly once, and nothing else was."""
    expected_set = set(expected)
    delivered = t.delivered_ids(table)
    counts = Counter(delivered)
    duplicates = [uid for uid, n in counts.items() if n > 1]
    missing = expected_set - counts.keys()
    extra = counts.keys() - expected_set
    assert not duplicates and not missing and not extra, (
        f"{len(delivered)} rows delivered for {len(expected_set)} committed: "
        f"{len(duplicates)} duplicated (e.g. {sorted(duplicates)[:5]}), "
        f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(extra)} unexpected (e.g. {sorted(extra)[:5]})"
    )
    return len(delivered)


def drain(t: Target, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run until everything committed so far is stored and acknowledged."""
    result = t.cdc("run", "--until-lsn", "current", *args, timeout=timeout, **extra_env)
    assert result.returncode == 0, f"drain exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result


def catch_up(t: Target, timeout: float = 120, slot: str = "cdc_outbox") -> None:
    """Wait until the running pipeline has acknowledged everything committed so far."""
    lsn = t.current_lsn()
    wait_until(lambda: t.slot_reached(lsn, slot), timeout, f"the slot to acknowledge {lsn}")


def walsender_pid(t: Target, slot: str = "cdc_outbox", timeout: float = 60) -> int:
    wait_until(lambda: slot_pid(t, slot) is not None, timeout, "cdc to start streaming from the slot")
    pid = slot_pid(t, slot)
    assert pid is not None
    return pid


def poll(during: float, every: float, sample: Callable[[], object]) -> list[object]:
    """Call ``sample`` every ``every`` seconds for ``during`` seconds; the values seen."""
    values = []
    deadline = time.monotonic() + during
    while time.monotonic() < deadline:
        values.append(sample())
        time.sleep(every)
    return values


def report(test: str, **figures: object) -> None:
    """Figures for docs/reliability.md: appended as JSON lines to $CDC_FAULT_REPORT when set."""
    line = orjson.dumps({"test": test, **figures}).decode()
    print(line)
    path = os.environ.get("CDC_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


class AckWatch(threading.Thread):
    """Samples the slot's confirmed position, then ClickHouse's high-water mark, every ``every`` seconds.

    Checked at the end with ``support.acknowledged_before_stored``. A sample whose
    ClickHouse read fails (the server is down) is dropped: what ClickHouse held
    then is not known from here.
    """

    def __init__(self, t: Target, every: float = 0.05) -> None:
        super().__init__(name="ack-watch", daemon=True)
        self.t = t
        self.every = every
        self.samples: list[tuple[int, Position | None]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                confirmed = self.t.confirmed_lsn()
                mark = high_water_mark(self.t)
            except Exception:  # noqa: BLE001 - a server down or restarting: no sample
                continue
            if confirmed is not None:
                self.samples.append((parse_lsn_text(confirmed), mark))

    def stop(self) -> list[tuple[int, Position | None]]:
        self._halt.set()
        self.join(30)
        return self.samples


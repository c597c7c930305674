"""The reader's in-process decode path, pure Python against the compiled accelerator.

Measures what the reader thread spends per event between "frames read" and
"rows in the open batch" (decode, transactions, convert, dedup, buffer), with
no sockets and no ClickHouse: the real ``Reader._stream`` loop is fed frames
captured from a real PostgreSQL walsender, by a stand-in connection whose
``read`` hands them over in the chunks a drain reads (up to 1,024 frames or
just past 96 KB), and a stand-in flusher that reports every batch stored at
once. Each measurement runs in a fresh child process, alternating
``CDC_NO_ACCEL=1`` (pure Python) and the default (compiled, when built), so
both sides share the machine's state in one sitting.

    python -m bench.reader_path capture              # once, ~30 s: starts PG18, writes bench/out/reader_frames.bin
    python -m bench.reader_path compare --runs 5     # side by side, alternating, with the spread
    python -m bench.reader_path once                 # one measurement in this process (JSON); honours CDC_NO_ACCEL
    python -m bench.reader_path rss                  # RSS over a million decodes (and a failing one per read): must stay flat

``once --stages`` also times each stage on its own over the same workload:
``decode`` (``insert_runs`` over the Insert frames of each read, as the assembler calls it),
``convert`` (``RowConverter.convert_many`` per run of tuples), ``dedup``
(``DedupWindow.admit_many`` per run of ids). The whole path is more than their
sum (frame classification, runs, the batch's columns).

The workload: ``bench.workload.load_backlog`` rows (UUID ids, 20 event types,
~200-byte JSON payloads, each row its own ``occurred_at``), 200,000 events in
transactions of 50,000, as the benchmark's drain writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FRAMES = ROOT / "bench" / "out" / "reader_frames.bin"
# As cdc.reader reads: at most this many frames, or until just past this many bytes.
READ_MESSAGES = 1024
READ_BYTES = 96 << 10
_LEN = struct.Struct(">I")


# -- the workload ---------------------------------------------------------------------------------


def capture(out: Path, events: int, txn_rows: int) -> None:
    """Load a backlog into a fresh PG18 and save every CopyData payload the walsender sends for it."""
    from cdc.migrate import apply_migrations, ensure_publication, ensure_slot
    from cdc.replication import preflight
    from cdc.replication.connection import ReplicationConnection
    from cdc.settings import Settings

    from .env import Servers  # noqa: F401 - puts tests/ on sys.path for the servers
    from .workload import load_backlog
    from servers import make_server_root, start_postgres  # type: ignore[import-not-found]
    from servers.postgres import create_database  # type: ignore[import-not-found]

    root = make_server_root()
    pg = start_postgres("pg18", root / "pg18")
    try:
        create_database(pg, "reader_path")
        s = Settings(pg_dsn=pg.dsn("reader_path"), clickhouse_url="clickhouse://localhost/unused")
        with preflight.connect(s.pg_dsn) as conn:
            apply_migrations(conn, s)
            ensure_publication(conn, s)
            ensure_slot(conn, s)
            load_backlog(conn, events, txn_rows=txn_rows)
            end = preflight.current_wal_lsn(conn)
        repl = ReplicationConnection.connect(s.pg_dsn)
        try:
            version = preflight.protocol_version(repl.server_version)
            repl.start_replication(s.slot, "0/0", {"proto_version": str(version), "publication_names": f'"{s.publication}"'})
            frames, commits, wanted = [], 0, -(-events // txn_rows)
            while commits < wanted:
                for data in repl.read(READ_MESSAGES, 5.0):
                    frame = bytes(data)
                    frames.append(frame)
                    if frame[0] == ord("w") and frame[25] == ord("C"):
                        commits += 1
        finally:
            repl.close()
    finally:
        pg.destroy()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(_LEN.pack(len(f)) + f for f in frames))
    print(f"{len(frames):,} frames, {commits} transactions, up to LSN {end:X}, {out.stat().st_size:,} bytes -> {out}")


def load(path: Path) -> list[bytes]:
    if not path.exists():
        raise SystemExit(f"bench: error: {path} does not exist: run `python -m bench.reader_path capture` first")
    data, frames, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        frames.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return frames


def reads(frames: list[bytes]) -> list[list[memoryview]]:
    out, chunk, size = [], [], 0
    for frame in frames:
        chunk.append(memoryview(frame))
        size += len(frame)
        if len(chunk) >= READ_MESSAGES or size >= READ_BYTES:
            out.append(chunk)
            chunk, size = [], 0
    if chunk:
        out.append(chunk)
    return out


# -- one measurement ------------------------------------------------------------------------------


class _Connection:
    """Hands over the captured reads in order; says nothing back."""

    def __init__(self, chunks: list[list[memoryview]]) -> None:
        self._chunks: Iterator[list[memoryview]] = iter(chunks)

    def read(self, max_messages: int, timeout: float, max_bytes: int = 1 << 62) -> list[memoryview]:
        chunk = next(self._chunks, None)
        if chunk is None:
            raise RuntimeError("the reader wanted more frames than were captured")
        return chunk

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        pass


class _Flusher:
    """Every batch is stored the moment it is handed over."""

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker
        self.rows = 0

    @property
    def idle(self) -> bool:
        return True

    def submit(self, batch: Any, **_: Any) -> None:
        self.rows += batch.rows
        self._tracker.stored(batch.seq)

    def wait_idle(self, **_: Any) -> None:
        pass


_BOUNDS = (datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))


def _reader(chunks: list[list[memoryview]], until_lsn: int) -> tuple[Any, _Flusher]:
    import structlog

    from cdc.backoff import Backoff
    from cdc.buffer import BatchBuilder
    from cdc.collector import Collector
    from cdc.dedup import DedupWindow
    from cdc.reader import Reader
    from cdc.retain import Retention
    from cdc.settings import Settings
    from cdc.spill import SpillBudget
    from cdc.tracker import AckTracker
    from cdc.transactions import TransactionAssembler

    s = Settings(pg_dsn="dbname=unused", clickhouse_url="clickhouse://localhost/unused")
    log = structlog.get_logger()
    tracker = AckTracker(0)
    builder = BatchBuilder(max_rows=s.batch_rows, max_bytes=s.batch_bytes, max_age=s.flush_interval)
    collector = Collector(
        outbox=(s.outbox_schema, s.outbox_table), builder=builder, tracker=tracker, dedup=DedupWindow(s.dedup_window),
        high_water_mark=None, bounds=_BOUNDS, max_payload_bytes=s.max_payload_bytes, log=log,
        on_full=lambda: reader.hand_off(),
    )
    flusher = _Flusher(tracker)
    reader = Reader(
        settings=s, sink=None, backoff=Backoff(s.retry_initial, s.retry_max), stop=threading.Event(),  # type: ignore[arg-type]
        log=log, tracker=tracker, builder=builder, collector=collector,
        assembler=TransactionAssembler(collector, SpillBudget(s.spill_bytes), log),
        flusher=flusher, until_lsn=until_lsn, retention=Retention(),  # type: ignore[arg-type]
    )
    reader.repl = _Connection(chunks)  # type: ignore[assignment]
    return reader, flusher


def _end_lsn(frames: list[bytes]) -> int:
    last = max(i for i, f in enumerate(frames) if f[0] == ord("w") and f[25] == ord("C"))
    return int.from_bytes(frames[last][35:43], "big")  # Commit: 'C', flags, commit_lsn, end_lsn


def measure_once(path: Path, stages: bool) -> dict[str, Any]:
    try:
        from cdc.accel import accelerator_status
    except ImportError:  # a cdc from before the accelerator
        def accelerator_status() -> str:
            return "pure Python (no accelerator in this version)"

    frames = load(path)
    chunks = reads(frames)
    inserts = sum(1 for f in frames if f[0] == ord("w") and f[25] == ord("I"))
    reader, flusher = _reader(chunks, _end_lsn(frames))
    cpu, wall = time.thread_time(), time.perf_counter()
    reader._stream()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    if flusher.rows != inserts:
        raise SystemExit(f"bench: error: {flusher.rows} rows reached the batches, {inserts} were sent")
    result: dict[str, Any] = {
        "implementation": accelerator_status(), "events": inserts, "frames": len(frames), "reads": len(chunks),
        "us_per_event": cpu / inserts * 1e6, "wall_us_per_event": wall / inserts * 1e6,
    }
    if stages:
        result["stages_us_per_event"] = _stages(frames, inserts)
    return result


def _stages(frames: list[bytes], events: int) -> dict[str, float]:
    """Each stage timed alone over the workload's runs (a run: the Insert frames of one read)."""
    from cdc.dedup import DedupWindow
    from cdc.outbox import RowConverter
    from cdc.pgoutput import Relation, decode, insert_runs

    relation = next(m for f in frames if f[0] == ord("w") and isinstance(m := decode(f[25:], in_stream=False), Relation))
    runs = [[f for f in chunk if f[0] == ord("w") and f[25] == ord("I")] for chunk in reads(frames)]
    converter = RowConverter(relation, bounds=_BOUNDS, max_payload_bytes=1 << 20)
    window = DedupWindow(1_000_000)
    clock = time.thread_time
    spent = {"decode": 0.0, "convert": 0.0, "dedup": 0.0}
    # Run by run, as the reader goes: holding every run's objects at once would
    # make the collector's full passes the biggest cost.
    for run in runs:
        t0 = clock()
        tuples = [values for _, group in insert_runs(run, 25) for values in group]
        t1 = clock()
        rows = converter.convert_many(tuples, 0)[0]
        t2 = clock()
        window.admit_many([row[0] for row in rows], 1.0)
        t3 = clock()
        spent["decode"] += t1 - t0
        spent["convert"] += t2 - t1
        spent["dedup"] += t3 - t2
    out = {stage: seconds / events * 1e6 for stage, seconds in spent.items()}
    return out


# -- memory over many decodes --------------------------------------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def rss(path: Path, decodes: int) -> dict[str, Any]:
    """Decode the captured Inserts (and as many broken ones) until ``decodes``; RSS after each tenth.

    A reference or a buffer kept per call would grow the process by at least
    the frames' size per pass: flat RSS after the first pass means none is.
    """
    from cdc.accel import accelerator_status
    from cdc.pgoutput import PgOutputError, insert_runs

    frames = load(path)
    runs = [[f for f in chunk if f[0] == ord("w") and f[25] == ord("I")] for chunk in reads(frames)]
    runs = [run for run in runs if run]
    broken = [memoryview(bytes(run[0][:-1])) for run in runs]  # the last byte of a value missing
    samples: list[tuple[int, int]] = []
    done, errors, step = 0, 0, decodes // 10
    while done < decodes:
        for run, bad in zip(runs, broken):
            insert_runs(run, 25)
            try:
                insert_runs([*run[:10], bad], 25)
            except PgOutputError:
                errors += 1
            done += len(run) + 10
            if done // step > len(samples):
                samples.append((done, _rss_kib()))
            if done >= decodes:
                break
    return {"implementation": accelerator_status(), "decodes": done, "errors": errors,
            "rss_kib": samples, "growth_after_first_tenth_kib": samples[-1][1] - samples[0][1]}


# -- side by side ---------------------------------------------------------------------------------


def compare(path: Path, runs: int, stages: bool) -> dict[str, Any]:
    sides = {"pure": {"CDC_NO_ACCEL": "1"}, "compiled": {}}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for i in range(runs):
        for side, extra in sides.items():
            env = {k: v for k, v in os.environ.items() if k != "CDC_NO_ACCEL"} | extra
            argv = [sys.executable, "-m", "bench.reader_path", "once", "--frames", str(path)] + (["--stages"] if stages else [])
            done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            one = json.loads(done.stdout)
            results[side].append(one)
            print(f"run {i + 1} {side:<8} {one['us_per_event']:.3f} us/event  ({one['implementation']})", file=sys.stderr)
    if "compiled" not in results["compiled"][0]["implementation"]:
        print("bench: warning: the accelerator is not built; both sides ran pure Python", file=sys.stderr)
    summary: dict[str, Any] = {"loadavg_1min": os.getloadavg()[0], "python": platform.python_version(), "sides": {}}
    for side, ones in results.items():
        values = [o["us_per_event"] for o in ones]
        entry: dict[str, Any] = {
            "implementation": ones[0]["implementation"], "runs": values,
            "median": statistics.median(values), "min": min(values), "max": max(values),
        }
        if stages:
            entry["stages_median"] = {k: statistics.median(o["stages_us_per_event"][k] for o in ones)
                                      for k in ones[0]["stages_us_per_event"]}
        summary["sides"][side] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="write the workload from a fresh PG18 (needs the test servers)")
    c.add_argument("--events", type=int, default=200_000)
    c.add_argument("--txn-rows", type=int, default=50_000)
    c.add_argument("--out", type=Path, default=DEFAULT_FRAMES)
    o = sub.add_parser("once", help="one measurement in this process, as JSON")
    o.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    o.add_argument("--stages", action="store_true", help="also time decode, convert and dedup alone")
    o.add_argument("--repeat", type=int, default=1, help="run the reader path this many times (for a profiler)")
    r = sub.add_parser("rss", help="RSS while decoding a million captured Inserts (and broken ones)")
    r.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    r.add_argument("--decodes", type=int, default=1_000_000)
    p = sub.add_parser("compare", help="pure against compiled, alternating, each run a fresh process")
    p.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--stages", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "capture":
        capture(args.out, args.events, args.txn_rows)
    elif args.command == "once":
        for _ in range(args.repeat - 1):
            measure_once(args.frames, False)
        print(json.dumps(measure_once(args.frames, args.stages)))
    elif args.command == "rss":
        print(json.dumps(rss(args.frames, args.decodes)))
    else:
        print(json.dumps(compare(args.frames, args.runs, args.stages), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

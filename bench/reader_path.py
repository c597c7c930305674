"""The read loop in-process over captured frames, pure Python against the compiled accelerator.

``bench.hotpath`` times the read loop (frames -> FrameDecoder -> transactions
-> collector -> buffer) over frames it builds; this feeds it frames captured
from a real PostgreSQL walsender instead, and compares the two implementations
``cdc.accel`` can pick: each measurement in a fresh child process, alternating
``CDC_NO_ACCEL=1`` (pure Python) and the default (compiled, when built), so
both sides share the machine's state in one sitting.

    python -m bench.reader_path capture              # once, ~30 s: starts PG18, writes bench/out/reader_frames.bin
    python -m bench.reader_path compare --runs 5     # side by side, alternating, with the spread (--stages too)
    python -m bench.reader_path once                 # one measurement in this process (JSON); honours CDC_NO_ACCEL
    python -m bench.reader_path rss                  # RSS over a million decodes (and a failing one per read): flat

The reads are cut as a drain reads (at most 1,024 frames, or until just past
96 KB). ``--stages`` also times each stage alone over the same reads: decode
(``insert_run_at`` over each read's Inserts), convert (``RowConverter``),
dedup (``DedupWindow.admit_many``). The workload: ``bench.workload.load_backlog``
rows (UUID ids, 20 event types, ~200-byte JSON payloads, each row its own
``occurred_at``), 200,000 events in transactions of 50,000, as the drain writes them.
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
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FRAMES = ROOT / "bench" / "out" / "reader_frames.bin"
READ_MESSAGES = 1024  # as the stream session reads: this many frames, or until just past READ_BYTES
READ_BYTES = 96 << 10
_LEN = struct.Struct(">I")
_W, _I, _C, _HEADER = ord("w"), ord("I"), ord("C"), 25


# -- the workload ---------------------------------------------------------------------------------


def capture(out: Path, events: int, txn_rows: int) -> None:
    """Load a backlog into a fresh PG18 and save every CopyData payload the walsender sends for it."""
    from cdc.pg import preflight
    from cdc.pg.connect import connect
    from cdc.pg.migrate import apply_migrations, ensure_publication, ensure_slot
    from cdc.pg.replication import ReplicationConnection
    from cdc.settings import Settings

    from . import env  # noqa: F401 - puts tests/ on the path, for the test suite's servers
    from .workload import load_backlog
    from servers import make_server_root, start_postgres

    root = make_server_root()
    pg = start_postgres("pg18", root / "pg18")
    try:
        with connect(pg.dsn(), application_name="bench") as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE reader_path")
        s = Settings(pg_dsn=pg.dsn("reader_path"))
        with connect(s.pg_dsn, application_name="bench") as conn:
            apply_migrations(conn, s)
            ensure_publication(conn, s)
            ensure_slot(conn, s)
            load_backlog(conn, events, txn_rows=txn_rows)
        repl = ReplicationConnection.connect(s.pg_dsn)
        try:
            version = preflight.protocol_version(repl.server_version)
            repl.start_replication(s.slot, "0/0", {"proto_version": str(version),
                                                   "publication_names": f'"{s.publication}"'})
            frames: list[bytes] = []
            commits, wanted = 0, -(-events // txn_rows)
            while commits < wanted:
                for data in repl.read(READ_MESSAGES, 5.0):
                    frames.append(bytes(data))
                    commits += frames[-1][0] == _W and frames[-1][_HEADER] == _C
        finally:
            repl.close()
    finally:
        pg.destroy()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(_LEN.pack(len(f)) + f for f in frames))
    print(f"{len(frames):,} frames, {commits} transactions, {out.stat().st_size:,} bytes -> {out}")


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
    out: list[list[memoryview]] = []
    chunk: list[memoryview] = []
    size = 0
    for frame in frames:
        chunk.append(memoryview(frame))
        size += len(frame)
        if len(chunk) >= READ_MESSAGES or size >= READ_BYTES:
            out.append(chunk)
            chunk, size = [], 0
    if chunk:
        out.append(chunk)
    return out


def _is_insert(frame: bytes | memoryview) -> bool:
    return frame[0] == _W and len(frame) > _HEADER and frame[_HEADER] == _I


# -- one measurement ------------------------------------------------------------------------------

_BOUNDS = (datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))


def measure_once(path: Path, stages: bool) -> dict[str, Any]:
    from cdc.accel import accelerator_status

    from .hotpath import measure

    frames = load(path)
    chunks = reads(frames)
    inserts = sum(map(_is_insert, frames))
    cpu = measure(chunks, inserts)  # the reader thread's CPU: this process runs nothing else meanwhile
    result: dict[str, Any] = {"implementation": accelerator_status(), "events": inserts, "frames": len(frames),
                              "reads": len(chunks), "us_per_event": cpu / inserts * 1e6}
    if stages:
        result["stages_us_per_event"] = _stages(chunks, inserts)
    return result


def _stages(chunks: list[list[memoryview]], events: int) -> dict[str, float]:
    """Each stage timed alone, read by read (holding every read's objects at once would time the GC)."""
    from cdc.core.dedup import DedupWindow
    from cdc.core.outbox import RowConverter
    from cdc.pgoutput import Relation, decode, insert_run_at

    relation = next(m for chunk in chunks for f in chunk
                    if f[0] == _W and isinstance(m := decode(f[_HEADER:], in_stream=False), Relation))
    runs = [run for run in ([f for f in chunk if _is_insert(f)] for chunk in chunks) if run]
    converter = RowConverter(relation, bounds=_BOUNDS, max_payload_bytes=1 << 20)
    window = DedupWindow(1_000_000)
    clock = time.process_time
    spent = {"decode": 0.0, "convert": 0.0, "dedup": 0.0}
    for run in runs:
        t0 = clock()
        tuples: list[Any] = []
        i = 0
        while i < len(run):
            _, part, i = insert_run_at(run, i, _HEADER)
            tuples += part
        t1 = clock()
        rows = converter.convert_many(tuples, 0)[0]
        t2 = clock()
        window.admit_many([row[0] for row in rows], 1.0)
        t3 = clock()
        spent["decode"] += t1 - t0
        spent["convert"] += t2 - t1
        spent["dedup"] += t3 - t2
    return {stage: seconds / events * 1e6 for stage, seconds in spent.items()}


# -- memory over many decodes --------------------------------------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def rss(path: Path, decodes: int) -> dict[str, Any]:
    """Decode the captured Inserts (and a broken one per read) until ``decodes``; RSS after each tenth.

    A reference or a buffer kept per call would grow the process by at least
    the frames' size per pass: flat RSS after the first pass means none is.
    """
    from cdc.accel import accelerator_status
    from cdc.pgoutput import PgOutputError, insert_run_at

    runs = [run for run in ([f for f in chunk if _is_insert(f)] for chunk in reads(load(path))) if run]
    broken = [memoryview(bytes(run[0][:-1])) for run in runs]  # the last byte of a value missing
    samples: list[tuple[int, int]] = []
    done, errors, step = 0, 0, decodes // 10
    while done < decodes:
        for run, bad in zip(runs, broken):
            i = 0
            while i < len(run):
                i = insert_run_at(run, i, _HEADER)[2]
            try:
                insert_run_at([*run[:10], bad], 0, _HEADER)
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
    sides: dict[str, dict[str, str]] = {"pure": {"CDC_NO_ACCEL": "1"}, "compiled": {}}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for i in range(runs):
        for side, extra in sides.items():
            env = {k: v for k, v in os.environ.items() if k != "CDC_NO_ACCEL"} | extra
            argv = [sys.executable, "-m", "bench.reader_path", "once", "--frames", str(path)]
            done = subprocess.run(argv + (["--stages"] if stages else []), env=env, cwd=ROOT, capture_output=True,
                                  text=True, check=True)
            one = json.loads(done.stdout)
            results[side].append(one)
            print(f"run {i + 1} {side:<8} {one['us_per_event']:.3f} us/event  ({one['implementation']})",
                  file=sys.stderr)
    if "compiled" not in results["compiled"][0]["implementation"]:
        print("bench: warning: the accelerator is not built; both sides ran pure Python", file=sys.stderr)
    summary: dict[str, Any] = {"loadavg_1min": os.getloadavg()[0], "python": platform.python_version(), "sides": {}}
    for side, ones in results.items():
        values = [o["us_per_event"] for o in ones]
        entry: dict[str, Any] = {"implementation": ones[0]["implementation"], "runs": values,
                                 "median": statistics.median(values), "min": min(values), "max": max(values)}
        if stages:
            entry["stages_median"] = {k: statistics.median(o["stages_us_per_event"][k] for o in ones)
                                      for k in ones[0]["stages_us_per_event"]}
        summary["sides"][side] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reader_path", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="write the workload from a fresh PG18 (needs the test servers)")
    c.add_argument("--events", type=int, default=200_000)
    c.add_argument("--txn-rows", type=int, default=50_000)
    c.add_argument("--out", type=Path, default=DEFAULT_FRAMES)
    o = sub.add_parser("once", help="one measurement in this process, as JSON")
    o.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    o.add_argument("--stages", action="store_true", help="also time decode, convert and dedup alone")
    o.add_argument("--repeat", type=int, default=1, help="run the read loop this many times (for a profiler)")
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

"""CPU per event of the read loop, in process: frames -> decode -> transactions -> collector -> buffer.

    python -m bench.hotpath                          # this tree
    python -m bench.hotpath --against DIR            # and the cdc/ under DIR, alternating, same frames

No server and no sink: frames are built as a walsender sends them (XLogData
around pgoutput: Relation, then transactions of Begin, ``--txn-rows`` Inserts of
outbox rows, Commit), cut into reads of ``--read`` frames, and handed to the
loop the stream session runs; full batches are sealed and dropped. Reads the
layout before cdc/core/ too (DIR can be ``git archive`` of an older commit), so
two commits compare in alternating child processes on the same machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_COLUMNS = ("id", "unique_id", "event_type", "occurred_at", "environment", "payload", "metadata_version",
            "created_at")
_PAYLOAD = b'{"order_id": 123456, "customer": {"id": 42, "tier": "gold"}, "items": [1, 2, 3], "total": 99.5}'
_AT = b"2026-11-24 21:58:27.123456+00"


def _xlogdata(message: bytes) -> bytes:
    return b"w" + bytes(24) + message


# The outbox's column types (migrations/0001_outbox.sql), as a binary stream names them.
_BINARY_TYPES = (20, 25, 25, 1184, 25, 3802, 23, 1184)
_AT_MICROS = struct.pack(">q", 848_872_707_123_456)  # _AT, from 2000-01-01


def _relation(binary: bool) -> bytes:
    body = struct.pack(">I", 16384) + b"public\0outbox\0d" + struct.pack(">H", len(_COLUMNS))
    for name, oid in zip(_COLUMNS, _BINARY_TYPES if binary else (25,) * len(_COLUMNS)):
        body += b"\0" + name.encode() + b"\0" + struct.pack(">Ii", oid, -1)
    return b"R" + body


def _insert(outbox_id: int, binary: bool) -> bytes:
    if binary:
        values = (struct.pack(">q", outbox_id), str(uuid.UUID(int=outbox_id)).encode(), b"order_placed", _AT_MICROS,
                  b"production", b"\x01" + _PAYLOAD, struct.pack(">i", 1), _AT_MICROS)
    else:
        values = (str(outbox_id).encode(), str(uuid.UUID(int=outbox_id)).encode(), b"order_placed", _AT,
                  b"production", _PAYLOAD, b"1", _AT)
    kind = b"b" if binary else b"t"
    body = b"".join(kind + struct.pack(">I", len(v)) + v for v in values)
    return b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", len(values)) + body


def frames(events: int, txn_rows: int, per_read: int, *, binary: bool = False,
           keepalives: bool = False) -> list[list[memoryview]]:
    """``keepalives``: one after each Commit, as a walsender that has caught up sends while it waits."""
    flat = [_xlogdata(_relation(binary))]
    lsn = 1 << 32
    for first in range(0, events, txn_rows):
        lsn += 1 << 20
        flat.append(_xlogdata(b"B" + struct.pack(">QqI", lsn, 0, first + 1)))
        flat += [_xlogdata(_insert(i, binary)) for i in range(first, min(events, first + txn_rows))]
        flat.append(_xlogdata(b"C" + struct.pack(">BQQq", 0, lsn, lsn + 64, 0)))
        if keepalives:
            flat.append(b"k" + struct.pack(">Qq?", lsn + 64, 0, False))
    views = [memoryview(frame) for frame in flat]
    return [views[k : k + per_read] for k in range(0, len(views), per_read)]


def _loop() -> tuple[Callable[[Any], Callable[[Sequence[memoryview]], None]], dict[str, Any]]:
    """(a function making the read loop's decode step for an assembler, the classes), for either layout."""
    try:
        from cdc.core import buffer, collector, dedup, tracker, transactions
        from cdc.core.spill import SpillBudget
        from cdc.pgoutput.framing import FrameDecoder

        def new_loop(assembler: Any) -> Callable[[Sequence[memoryview]], None]:
            return FrameDecoder(assembler, keepalive=lambda frame: None).decode

        return new_loop, {"buffer": buffer, "collector": collector, "dedup": dedup, "tracker": tracker,
                          "transactions": transactions, "SpillBudget": SpillBudget, "layout": "cdc/core"}
    except ImportError:
        pass
    from cdc import buffer, collector, dedup, tracker, transactions  # type: ignore[no-redef]
    from cdc.pgoutput import decode
    from cdc.spill import SpillBudget  # type: ignore[import-not-found,no-redef]

    def old_loop(assembler: Any) -> Callable[[Sequence[memoryview]], None]:
        # The loop of cdc/reader.py before cdc/core/, without keepalives (there are none here).
        def feed(frames: Sequence[memoryview]) -> None:
            inserts: list[memoryview] = []
            in_stream = assembler.in_stream
            for data in frames:
                if data[0] == 119:
                    if not in_stream and len(data) > 25 and data[25] == 73:
                        inserts.append(data)
                        continue
                    if inserts:
                        assembler.inserts(inserts, 25)
                        inserts = []
                    assembler.feed(decode(data[25:], in_stream=in_stream))
                    in_stream = assembler.in_stream
            if inserts:
                assembler.inserts(inserts, 25)

        return feed

    return old_loop, {"buffer": buffer, "collector": collector, "dedup": dedup, "tracker": tracker,
                      "transactions": transactions, "SpillBudget": SpillBudget, "layout": "flat"}


def measure(reads: list[list[memoryview]], events: int, *, binary: bool = False, pause: float = 0.0) -> float:
    """Seconds of CPU to run every read through the loop into a fresh pipeline core.

    ``pause``: seconds slept before each read, as the live loop sleeps between wake-ups (the
    caches cool meanwhile); only the reads' CPU counts.
    """
    import structlog

    make_loop, m = _loop()
    log = structlog.get_logger()
    builder = m["buffer"].BatchBuilder(max_rows=50_000, max_bytes=32 << 20, max_age=3600.0)
    bounds = (datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2299, 12, 31, tzinfo=timezone.utc))
    coll = m["collector"].Collector(
        outbox=("public", "outbox"), builder=builder, tracker=m["tracker"].AckTracker(0),
        dedup=m["dedup"].DedupWindow(capacity=1_000_000, max_age=3600.0), high_water_mark=None, bounds=bounds,
        max_payload_bytes=1 << 20, log=log, on_full=builder.seal,
    )
    coll.binary = binary
    loop = make_loop(m["transactions"].TransactionAssembler(coll, m["SpillBudget"](64 << 20), log))
    spent = 0.0
    for read in reads:
        if pause:
            time.sleep(pause)
        started = time.process_time()
        loop(read)
        spent += time.process_time() - started
    if coll.counters.rows_buffered != events:
        raise SystemExit(f"{coll.counters.rows_buffered} rows buffered, expected {events}")
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--txn-rows", type=int, default=50_000)
    parser.add_argument("--read", type=int, default=1024, help="frames per read")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--binary", action="store_true", help="rows in binary pgoutput, as the outbox's types send")
    parser.add_argument("--keepalives", action="store_true", help="a keepalive after each transaction")
    parser.add_argument("--pause", type=float, default=0.0, metavar="SECONDS",
                        help="sleep before each read, as live traffic's loop does between wake-ups")
    parser.add_argument("--against", metavar="DIR", help="also measure the cdc/ in DIR, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        reads = frames(args.events, args.txn_rows, args.read, binary=args.binary, keepalives=args.keepalives)
        print(measure(reads, args.events, binary=args.binary, pause=args.pause) / args.events * 1e6)
        return 0
    trees = {"this": str(Path(__file__).resolve().parent.parent)}
    if args.against:
        trees["against"] = str(Path(args.against).resolve())
    runs: dict[str, list[float]] = {name: [] for name in trees}
    # This file by path (it imports only cdc and structlog), with the measured tree first on the path.
    command = [sys.executable, __file__, "--child", "--events", str(args.events), "--txn-rows", str(args.txn_rows),
               "--read", str(args.read), *(["--binary"] if args.binary else []),
               *(["--keepalives"] if args.keepalives else []), "--pause", str(args.pause)]
    for round_ in range(args.rounds):
        for name in list(trees)[:: 1 if round_ % 2 == 0 else -1]:
            out = subprocess.run(command, env={**os.environ, "PYTHONPATH": trees[name]}, cwd=trees[name],
                                 capture_output=True, text=True, check=True)
            runs[name].append(float(out.stdout.split()[-1]))
    for name, values in runs.items():
        print(f"{name:>8} ({trees[name]}): median {statistics.median(values):.2f} us/event, "
              f"best {min(values):.2f}, all {', '.join(f'{v:.2f}' for v in values)}")
    if "against" in runs:
        print(f"this / against: {statistics.median(runs['this']) / statistics.median(runs['against']):.3f} (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

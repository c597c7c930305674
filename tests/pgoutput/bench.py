"""How fast decode is on a realistic outbox Insert; run from the repository root:

    /tmp/venv/bin/python -m tests.pgoutput.bench
"""

from __future__ import annotations

import timeit

from cdc.pgoutput import Begin, Commit, Insert, decode

from .capture import OUTBOX_ROWS, TRACE_ID
from .encoder import encode

# 8 columns: int8 id, uuid text, event type, timestamptz, environment, ~200 byte jsonb, int4, trace id.
INSERT = encode(Insert(None, 16384, tuple(None if v is None else v.encode() for v in ("1001", *OUTBOX_ROWS[0], TRACE_ID))))
BEGIN = encode(Begin(0x1_6B37_48A0, 767_882_096_789_000, 7_654_321))
COMMIT = encode(Commit(0, 0x1_6B37_48A0, 0x1_6B37_48D0, 767_882_096_789_000))


def per_call(statement: str, number: int = 200_000) -> float:
    """Best of five runs, in microseconds per call."""
    names = {"decode": decode, "INSERT": INSERT, "VIEW": VIEW, "BEGIN": BEGIN, "COMMIT": COMMIT}
    best = min(timeit.repeat(statement, globals=names, number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    print(f"Insert, {len(INSERT)} bytes:          {per_call('decode(INSERT)'):.2f} µs")
    print(f"Insert from a memoryview:      {per_call('decode(VIEW)'):.2f} µs")
    print(f"Begin + Insert + Commit:       {per_call('decode(BEGIN); decode(INSERT); decode(COMMIT)'):.2f} µs")


VIEW = memoryview(b"w" + bytes(24) + INSERT)[25:]  # as it sits in an XLogData payload

if __name__ == "__main__":
    main()

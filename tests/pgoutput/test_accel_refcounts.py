"""The compiled Insert decoding keeps no reference and no memory it should not, on success or failure
(how each is seen: tests/pgoutput/leaks.py). The shared objects watched: None, UNCHANGED, the input."""

from __future__ import annotations

from collections.abc import Callable
from struct import pack

import pytest

from cdc.pgoutput import UNCHANGED, PgOutputError
from implementations import insert_decoding

from .leaks import assert_refcounts_kept, leaked

HEADER = b"w" + bytes(24)
GOOD = b"I" + pack(">I", 16384) + b"N" + pack(">H", 4) + b"t" + pack(">I", 5) + b"hello" + b"n" + b"u" + b"b\x00\x00\x00\x00"
BROKEN = GOOD[:-2]
OTHER = b"I" + pack(">I", 16385) + b"N" + pack(">H", 1) + b"u"


def _swallow(call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        try:
            return call()
        except PgOutputError:
            return None
    return run


@pytest.fixture(scope="module")
def compiled() -> object:
    return insert_decoding("compiled")


def test_decoding_good_and_broken_inserts_leaks_nothing(compiled: object) -> None:
    at = compiled.decode_insert_at  # type: ignore[attr-defined]
    good, broken = HEADER + GOOD, HEADER + BROKEN
    assert at(good, len(HEADER)) == (16384, (b"hello", None, UNCHANGED, b""))
    assert leaked(lambda: at(good, len(HEADER))) < 4096
    assert leaked(_swallow(lambda: at(broken, len(HEADER))), 5_000) < 4096


def test_decoding_runs_leaks_nothing_and_lets_go_of_every_frame(compiled: object) -> None:
    run_at = compiled.insert_run_at  # type: ignore[attr-defined]
    frames: list[bytes | memoryview] = [HEADER + GOOD, memoryview(HEADER + GOOD), HEADER + OTHER, memoryview(HEADER + GOOD)]
    assert [(rid, len(run), i) for rid, run, i in (run_at(frames, k, len(HEADER)) for k in (0, 2, 3))] == [
        (16384, 2, 2), (16385, 1, 3), (16384, 1, 4)]
    assert leaked(lambda: run_at(frames, 0, len(HEADER))) < 4096
    broken = [*frames[:2], memoryview(HEADER + BROKEN)]
    assert leaked(_swallow(lambda: run_at(broken, 0, len(HEADER))), 5_000) < 4096
    for frame in frames:
        if isinstance(frame, memoryview):
            frame.release()  # BufferError if a buffer taken from it was never released


def test_shared_objects_keep_their_reference_counts(compiled: object) -> None:
    at, run_at = compiled.decode_insert_at, compiled.insert_run_at  # type: ignore[attr-defined]
    good, broken = HEADER + GOOD, HEADER + BROKEN
    watched = (None, UNCHANGED, good, broken)

    def calls() -> None:
        for _ in range(1000):
            at(good, len(HEADER))
            run_at([good, memoryview(good)], 0, len(HEADER))
            for frames in ([broken], [good, broken]):
                try:
                    run_at(frames, 0, len(HEADER)) if len(frames) > 1 else at(frames[0], len(HEADER))
                except PgOutputError:
                    pass

    assert_refcounts_kept(calls, watched)

"""The reader's Insert decoding: compiled when ``cdc.accel`` says so, else the reference in ``_tuples``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from ..accel import native
from . import _tuples
from .messages import UNCHANGED, TupleData

DecodeInsertAt = Callable[[bytes, int], tuple[int, TupleData]]
InsertRuns = Callable[[Iterable[bytes | memoryview], int], list[tuple[int, list[TupleData]]]]


def _select() -> tuple[DecodeInsertAt, InsertRuns]:
    if native is None:
        return _tuples.decode_insert_at, _tuples.insert_runs
    decoder = native.InsertDecoder(UNCHANGED, _tuples.decode_insert_at, _tuples.insert_runs)
    return decoder.decode_insert_at, decoder.insert_runs


_SELECTED: Final = _select()
decode_insert_at: Final = _SELECTED[0]
insert_runs: Final = _SELECTED[1]

"""The reader's Insert decoding and small-transaction groups: compiled when ``cdc.accel`` says so, else the
references in ``_tuples`` and ``_groups``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from ..accel import native
from . import _groups, _tuples
from .messages import UNCHANGED, TupleData

DecodeInsertAt = Callable[[bytes, int], tuple[int, TupleData]]
InsertRunAt = Callable[[Sequence[bytes | memoryview], int, int], tuple[int, list[TupleData], int]]
TransactionsAt = Callable[[Sequence[bytes | memoryview], int, int, int], _groups.Group]


def _select() -> tuple[DecodeInsertAt, InsertRunAt, TransactionsAt]:
    if native is None:
        return _tuples.decode_insert_at, _tuples.insert_run_at, _groups.transactions_at
    decoder = native.InsertDecoder(UNCHANGED, _tuples.decode_insert_at, _tuples.insert_run_at,
                                   _groups.transactions_at)
    return decoder.decode_insert_at, decoder.insert_run_at, decoder.transactions_at


_SELECTED: Final = _select()
decode_insert_at: Final = _SELECTED[0]
insert_run_at: Final = _SELECTED[1]
transactions_at: Final = _SELECTED[2]

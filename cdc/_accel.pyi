# Types of the compiled accelerator (cdc/_accel.c); cdc.accel decides whether it is used.
from collections.abc import Callable, Sequence
from typing import Any

from .core.outbox import Converted
from .pgoutput._groups import Group
from .pgoutput.messages import TupleData, Value

class InsertDecoder:
    def __init__(
        self,
        unchanged: object,
        decode_insert_at: Callable[[bytes, int], tuple[int, TupleData]],
        insert_run_at: Callable[[Sequence[bytes | memoryview], int, int], tuple[int, list[TupleData], int]],
        transactions_at: Callable[[Sequence[bytes | memoryview], int, int, int], Group],
    ) -> None: ...
    def decode_insert_at(self, buf: bytes, offset: int) -> tuple[int, TupleData]: ...
    def insert_run_at(
        self, frames: Sequence[bytes | memoryview], start: int, offset: int
    ) -> tuple[int, list[TupleData], int]: ...
    def transactions_at(self, frames: Sequence[bytes | memoryview], start: int, offset: int, limit: int) -> Group: ...

class Converter:
    def __init__(
        self,
        index: tuple[int, ...],
        width: int,
        low: int,
        high: int,
        max_payload: int,
        strings: dict[bytes, str],
        convert_many: Callable[[Sequence[TupleData], int], tuple[list[tuple[Any, ...]], list[tuple[int, TupleData, str]]]],
        *,
        binary: bool = False,
        transactions: Callable[[Sequence[TupleData], Sequence[tuple[int, int, int, int]]], Converted] | None = None,
    ) -> None: ...
    def convert_many(
        self, tuples: Sequence[TupleData], first_seq: int
    ) -> tuple[list[tuple[Any, ...]], list[tuple[int, TupleData, str]]]: ...
    def convert_transactions(self, tuples: Sequence[TupleData], txns: Sequence[tuple[int, int, int, int]]) -> Converted: ...

# The rows InsertDecoder's insert_run_at and transactions_at hand on (typed there as the TupleData it stands for).
class WireTuple(Sequence[Value]):
    def __getitem__(self, index: Any) -> Any: ...
    def __len__(self) -> int: ...

def insert_ids(
    ids: list[str | bytes], salt: bytes, now: float, index: Any, hi: Any, lo: Any, ts: Any,
    mask: int, capacity: int, head: int, count: int,
) -> tuple[list[bool], int, int] | None: ...

def copy_frames(
    buf: bytes | bytearray, start: int, end: int, max_messages: int, max_bytes: int
) -> tuple[list[bytes], int, int]: ...

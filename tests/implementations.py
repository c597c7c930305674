"""Both implementations of each accelerated hot loop, for the tests that must hold for each.

The pure-Python code is the reference and the fallback; the compiled
accelerator (``cdc._accel``) exists when the package was built with a C
compiler. Tests parametrized over ``IMPLEMENTATIONS`` run once per path in a
single pytest run, whichever path ``cdc.accel`` picked for the process. Where
the accelerator is not built they skip the compiled case, except under CI
(``CI`` set, as tests/conftest.py reads it), where it must be built: there a missing build fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import cdc.accel
from cdc.pgoutput import UNCHANGED, Insert, _groups, _tuples
from pgoutput.encoder import encode

IMPLEMENTATIONS = ("python", "compiled")


def compiled_module() -> ModuleType:
    """``cdc._accel``, or a skip (a failure under CI, which must build it)."""
    try:
        import cdc._accel as accel
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the accelerator is not built ({exc}): CI must build it (gcc and python3-dev, pip install -e .)")
        pytest.skip(f"the accelerator is not built: {exc}")
    return accel


def is_wire_tuple(value: object) -> bool:
    """A row as the compiled run and group decoders make it (cdc/_accel_tuple.c): the tuple it stands for,
    left in its frame. (By name: the accelerator may be loaded here when cdc.accel did not pick it.)"""
    return type(value).__module__ == "cdc._accel" and type(value).__name__ == "WireTuple"


def wire_tuple(values: Sequence[object]) -> Any:
    """``values`` as the compiled run decoder hands a row on (a WireTuple, from an Insert frame that carries
    them), when the wire can carry them (bytes, None, UNCHANGED); else ``values`` as they are."""
    if not all(value is None or value is UNCHANGED or type(value) is bytes for value in values):
        return values
    frame = b"w" + bytes(24) + encode(Insert(None, 1, tuple(values)))  # type: ignore[arg-type]
    _, run, _ = insert_decoding("compiled").insert_run_at([frame], 0, 25)
    assert is_wire_tuple(run[0])
    return run[0]


@dataclass(frozen=True)
class InsertDecoding:
    name: str
    decode_insert_at: Any
    insert_run_at: Any
    transactions_at: Any


def insert_decoding(name: str) -> InsertDecoding:
    if name == "python":
        return InsertDecoding(name, _tuples.decode_insert_at, _tuples.insert_run_at, _groups.transactions_at)
    decoder = compiled_module().InsertDecoder(UNCHANGED, _tuples.decode_insert_at, _tuples.insert_run_at,
                                              _groups.transactions_at)
    return InsertDecoding(name, decoder.decode_insert_at, decoder.insert_run_at, decoder.transactions_at)


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """The implementation that objects built during a test use (RowConverter and DedupWindow read
    ``cdc.accel.native`` when built). Module-scoped, so that hypothesis tests may use it too."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(cdc.accel, "native", None if request.param == "python" else compiled_module())
        yield str(request.param)

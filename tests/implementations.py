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
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import cdc.accel
from cdc.pgoutput import UNCHANGED, _groups, _tuples

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

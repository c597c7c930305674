"""Which implementation runs the hot loops: the compiled accelerator or the pure-Python reference.

The accelerator (``cdc._accel``, C, built by ``pip install`` when a compiler and
Python's headers are there: see setup.py) does the common, well-formed case of
the reader's hot loops and hands anything else to the pure-Python code, which
stays the reference: same results, same errors. It is used whenever it
imports, unless ``CDC_NO_ACCEL`` is set (to anything but ``0``). This module is
the one place that decides, once, at import; the modules it speeds up take
``native`` from here. ``cdc doctor`` prints ``accelerator_status()``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Final

_MODULE: Final = "cdc._accel"


def _load() -> tuple[ModuleType | None, str]:
    setting = os.environ.get("CDC_NO_ACCEL", "")
    if setting not in ("", "0"):
        return None, f"pure Python (CDC_NO_ACCEL={setting})"
    if importlib.util.find_spec(_MODULE) is None:
        return None, ("pure Python (not built: cdc was installed without a C compiler; "
                      "install gcc and python3-dev, then reinstall cdc)")
    try:
        return importlib.import_module(_MODULE), f"compiled ({_MODULE})"
    except ImportError as exc:  # built for another Python, or a broken build
        return None, f"pure Python (not built: {_MODULE} does not load: {exc})"


_LOADED: Final = _load()
native: Final = _LOADED[0]  # cdc._accel, or None: the pure-Python reference runs
STATUS: Final = _LOADED[1]


def accelerator_status() -> str:
    """Which path runs, and why: "compiled (cdc._accel)" or "pure Python (...)"."""
    return STATUS

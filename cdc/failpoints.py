"""Named points where a crash test can make this process die with SIGKILL.

``CDC_FAILPOINTS="after_insert=2,row=150000"`` kills the process the 2nd time a
batch has been inserted but not yet acknowledged, or at the 150,000th buffered
row, whichever comes first. Unset (the normal case), nothing is checked.

Points: ``row`` (a row was buffered), ``before_insert``, ``during_insert`` (a
timer fires 20 ms into the insert), ``after_insert`` (stored, not acknowledged).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

POINTS: Final = frozenset({"row", "before_insert", "during_insert", "after_insert"})


class Failpoints:
    def __init__(self, spec: str) -> None:
        self._left: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, count = item.partition("=")
            if name not in POINTS or not count.isdigit() or int(count) < 1:
                raise ValueError(f"bad failpoint {item!r}: use NAME=N with NAME one of {', '.join(sorted(POINTS))}")
            self._left[name] = int(count)

    @classmethod
    def from_env(cls) -> Failpoints | None:
        spec = os.environ.get("CDC_FAILPOINTS")
        return cls(spec) if spec else None

    def hit(self, name: str) -> None:
        left = self._left.get(name)
        if left is None:
            return
        if left > 1:
            self._left[name] = left - 1
            return
        if name == "during_insert":
            del self._left[name]
            threading.Timer(0.02, _die).start()
            return
        _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)

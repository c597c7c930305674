"""The replay window: acknowledge a position held back from what is stored.

A logical slot cannot go back past its confirmed position. Holding the
acknowledgement ``--retain`` bytes or seconds behind what ClickHouse has keeps
that much WAL, so that ``cdc run --from-lsn`` can replay it later.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Final

_SIZE: Final = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_TIME: Final = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SPEC: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class RetainError(ValueError):
    """A --retain value that is neither a size nor a duration."""


class Retention:
    """Which LSN to report as flushed, given the one that is safe."""

    def __init__(self, *, nbytes: int = 0, seconds: float = 0.0) -> None:
        self.nbytes = nbytes
        self.seconds = seconds
        self._history: deque[tuple[float, int]] = deque()

    @classmethod
    def parse(cls, spec: str | None) -> Retention:
        """'512MB', '2GB' (bytes of WAL) or '30min', '6h', '7d' (time); None or '0' for none."""
        if not spec:
            return cls()
        match = _SPEC.match(spec)
        unit = match.group(2).lower() if match else ""
        if match is None or (unit not in _SIZE and unit not in _TIME):
            raise RetainError(f"--retain {spec!r}: give a WAL size such as 512MB or a time such as 6h")
        value = float(match.group(1))
        if unit in _TIME:
            return cls(seconds=value * _TIME[unit])
        return cls(nbytes=int(value * _SIZE[unit]))

    @property
    def active(self) -> bool:
        return self.nbytes > 0 or self.seconds > 0

    def held(self, safe: int, now: float) -> int:
        """The LSN to acknowledge: ``safe`` less the window (never more than safe)."""
        held = safe
        if self.nbytes:
            held = max(0, safe - self.nbytes)
        if self.seconds:
            history = self._history
            if not history or history[-1][1] != safe:
                history.append((now, safe))
            # The newest position that is at least `seconds` old; until there is
            # one, the oldest we know (the position we started from).
            while len(history) > 1 and now - history[1][0] >= self.seconds:
                history.popleft()
            held = min(held, history[0][1])
        return held

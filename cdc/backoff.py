"""Exponential backoff with jitter, capped, and forever at the cap."""

from __future__ import annotations

import random
from collections.abc import Iterator


class Backoff:
    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        self.initial = initial
        self.cap = cap
        self._rng = rng or random.Random()

    def delays(self) -> Iterator[float]:
        """Each delay is drawn from [d/2, d] where d doubles up to the cap: retries spread out."""
        delay = self.initial
        while True:
            yield self._rng.uniform(delay / 2, delay)
            delay = min(self.cap, delay * 2)

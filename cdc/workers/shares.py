"""How many shards each live worker should own, and which ones to try first. No I/O here.

Without caps every worker's share is ceil(N / live workers). A worker started
with ``--max-shards K`` never takes more than K; the others' share then rises
just enough to cover what the capped ones leave (water-filling), so no shard
stays unowned while some worker could take it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def targets(shards: int, caps: Mapping[str, int | None]) -> dict[str, int]:
    """Each worker's share: min(its cap, L), L the smallest level at which the shares cover ``shards``.

    Shares may add up to more than ``shards`` (like ceil): a share is a most, not a must.
    """
    if not caps:
        return {}
    limit = {w: shards if cap is None else max(0, min(cap, shards)) for w, cap in caps.items()}
    level = -(-shards // len(caps))  # ceil: enough when nobody is capped
    while level < shards and sum(min(c, level) for c in limit.values()) < shards:
        level += 1
    return {w: min(c, level) for w, c in limit.items()}


def preference(worker_id: str, count: int) -> list[int]:
    """The order in which a worker tries free shards: its own rotation, so that workers joining
    at once mostly try different shards first (a collision only costs a refused try-lock)."""
    if count <= 0:
        return []
    start = int.from_bytes(hashlib.blake2b(worker_id.encode(), digest_size=4).digest(), "big") % count
    return [(start + i) % count for i in range(count)]


def to_release(owned: Sequence[T], target: int) -> list[T]:
    """The shards to hand over when owning more than ``target``: the most recently taken ones."""
    extra = len(owned) - target
    return list(owned[-extra:]) if extra > 0 else []

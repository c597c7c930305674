"""Names and numbers of a sharded outbox: which slots, publications and progress streams a generation has.

An outbox with one shard is today's layout: the slot and the publication are
``--slot`` and ``--publication`` themselves, rows carry stream 0 in ClickHouse,
and nothing here changes it. With N shards, generation G has, for k in 0..N-1:

- slot ``{slot}_{k}`` (generation 1) or ``{slot}_g{G}_{k}`` (later ones: a
  reshard creates the next generation while the previous one still drains);
- publication ``{publication}_{k}`` / ``{publication}_g{G}_{k}``, publishing the
  outbox's inserts ``WHERE ((shard_hash % N) = k)``;
- stream ``G * 100 + k``: the key of the shard's rows in ClickHouse's progress
  ledger, so each slot has its own high-water mark and dedup window.

``shard_hash`` is a stored generated column, ``hashtextextended(unique_id, 0)``
with the sign bit cleared: the function PostgreSQL's hash partitioning uses,
stable across versions and platforms, so a unique_id always lands in one shard.
The modulus is in the row filter, not in the column, so resharding rewrites no
row. No I/O here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from ..names import NameError_, identifier, slot_name
from ..settings import Settings

MAX_SHARDS: Final = 64
SHARD_COLUMN: Final = "shard_hash"
# The sign bit cleared (not abs(), which overflows on the smallest bigint and
# would make the application's INSERT fail). A NULL unique_id (an outbox of the
# application's own that allows it) goes to shard 0, to be dead-lettered there:
# a NULL shard_hash matches no shard's row filter, and the row would be lost.
SHARD_EXPRESSION: Final = "coalesce(hashtextextended(unique_id, 0), 0) & 9223372036854775807"
UNSHARDED_STREAM: Final = 0
_STREAMS_PER_GENERATION: Final = 100


class ShardCountError(ValueError):
    """A shard count outside 1..MAX_SHARDS."""


def check_count(count: int) -> int:
    if not 1 <= count <= MAX_SHARDS:
        raise ShardCountError(f"--shards must be between 1 and {MAX_SHARDS}, got {count}")
    return count


def _suffix(generation: int, index: int) -> str:
    return f"_{index}" if generation == 1 else f"_g{generation}_{index}"


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard of one generation: the slot that streams it and where its progress is kept."""

    generation: int
    index: int
    count: int
    slot: str
    publication: str
    stream: int
    # Where its generation starts (set by a reshard): transactions committed
    # before it belong to the previous generation, and this shard skips them.
    starts_at: int | None = None
    # The other streams of its generation: their ids can never come to this
    # shard, so the dedup window is not rebuilt from them.
    siblings: tuple[int, ...] = ()
    # Replay: deliver again what the slot still holds after this LSN (once, when first streamed).
    replay_from: int | None = None

    @property
    def skip_before(self) -> tuple[int, int] | None:
        """The position to skip up to (inclusive): the newest one committed before ``starts_at``."""
        return None if self.starts_at is None else (self.starts_at - 1, 0xFFFFFFFF)

    @property
    def row_filter(self) -> str | None:
        """The publication's WHERE clause (None: every row, one shard)."""
        if self.generation == 0 or self.count == 1:
            return None
        return f"(({SHARD_COLUMN} % {self.count}) = {self.index})"

    @property
    def label(self) -> str:
        return "unsharded" if self.generation == 0 else f"{self.index}/{self.count}"


def shard_number(stream: int) -> str | None:
    """The shard's number within its generation, as the ``shard`` label of its metrics; None unsharded."""
    return None if stream == UNSHARDED_STREAM else str(stream % _STREAMS_PER_GENERATION)


def unsharded(slot: str, publication: str) -> Shard:
    """Today's layout: the one slot and publication, stream 0."""
    return Shard(generation=0, index=0, count=1, slot=slot, publication=publication, stream=UNSHARDED_STREAM)


def shards_of(slot: str, publication: str, generation: int, count: int) -> list[Shard]:
    """The shards of ``generation`` (>= 1) with ``count`` shards; NameError_ when a name would be too long."""
    check_count(count)
    if generation < 1:
        raise ValueError(f"a sharded generation is numbered from 1, got {generation}")
    out = []
    streams = tuple(generation * _STREAMS_PER_GENERATION + k for k in range(count))
    for k in range(count):
        suffix = _suffix(generation, k)
        try:
            shard_slot = slot_name(slot + suffix)
            shard_publication = identifier(publication + suffix, "publication")
        except NameError_:
            raise NameError_(
                f"slot {slot!r} or publication {publication!r} is too long to add {suffix!r} (63 characters at most): "
                "choose shorter names with --slot and --publication"
            ) from None
        out.append(Shard(generation, k, count, shard_slot, shard_publication, streams[k],
                         siblings=tuple(s for s in streams if s != streams[k])))
    return out


def lock_key(slot: str) -> int:
    """The advisory lock key (a signed bigint) that says who owns ``slot``: stable, derived from its name alone."""
    return _key(b"cdc-shard-slot:" + slot.encode())


def member_key(worker_id: str) -> int:
    """The advisory lock a worker holds while alive: its session ending frees it at once."""
    return _key(b"cdc-worker:" + worker_id.encode())


def reshard_key(slot: str) -> int:
    """Held by the one ``cdc shards reshard`` allowed at a time for this slot family."""
    return _key(b"cdc-reshard:" + slot.encode())


def _key(data: bytes) -> int:
    from hashlib import blake2b

    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big", signed=True)


def split_key(key: int) -> tuple[int, int]:
    """The (classid, objid) pair pg_locks shows for a bigint advisory key: high and low 32 bits, unsigned."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def shard_settings(settings: Settings, shard: Shard) -> Settings:
    """``settings`` pointed at one shard: its slot, publication and stream."""
    return dataclasses.replace(settings, slot=shard.slot, publication=shard.publication, stream=shard.stream,
                               sibling_streams=shard.siblings)

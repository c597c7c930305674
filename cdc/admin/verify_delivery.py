"""Where delivery stands for ``cdc verify``: one slot and its high-water mark, or every shard's of a sharded outbox.

``cdc run`` has handled every transaction committed before its slot's confirmed
position, and before its stream's high-water mark in ClickHouse (it stores in
commit order). On a sharded outbox each shard's slot and stream say so for its
own rows: delivery has passed the snapshot when every shard's has, and a row
absent from ClickHouse is in flight when its shard's slot still holds it, which
a read of each lagging shard's slot tells (their answers joined).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.positions import is_synthetic
from ..lsn import format_lsn, parse_lsn
from ..pg.pending import Pending, read_pending
from ..pg.slots import SlotRow
from ..shards.layout import Shard


@dataclass(frozen=True, slots=True)
class Delivery:
    """How far ``cdc run`` has handled the stream: the slot's confirmed position and ClickHouse's high-water mark."""

    slot_name: str
    slot: SlotRow | None
    high_water: tuple[int, int] | None
    wal_now: int  # the server's WAL position, read after the high-water mark

    @property
    def slot_holds_rows(self) -> bool:
        return self.slot is not None and not self.slot.invalidated

    @property
    def impossible(self) -> bool:
        """A high-water mark past the server's WAL position: set by a row no transaction wrote."""
        return self.high_water is not None and self.high_water[0] > self.wal_now

    @property
    def streamed(self) -> tuple[int, int] | None:
        hwm = self.high_water
        return None if hwm is None or is_synthetic(hwm[0]) or self.impossible else hwm

    def waiting(self, lsn: int) -> bool:
        """Worth waiting for: delivery has not reached ``lsn`` and a ``cdc run`` streams the slot."""
        return (not self.reached(lsn) and self.slot is not None and bool(self.slot.active)
                and not self.slot.invalidated)

    def reached(self, lsn: int) -> bool:
        confirmed = self.slot.confirmed_flush_lsn if self.slot is not None else None
        if confirmed is not None and parse_lsn(confirmed) >= lsn:
            return True
        return self.streamed is not None and self.streamed[0] >= lsn

    def describe(self, lsn: int) -> str:
        if self.slot is None:
            where = f"slot {self.slot_name} does not exist: rows not in ClickHouse will not arrive by themselves"
        elif self.slot.invalidated:
            where = f"slot {self.slot_name} is invalidated: rows not in ClickHouse will not arrive by themselves"
        else:
            state = "in use" if self.slot.active else "idle"
            where = f"slot {self.slot_name} ({state}) confirmed {self.slot.confirmed_flush_lsn}"
        if self.streamed is not None:
            where += f"; ClickHouse's newest streamed event {format_lsn(self.streamed[0])} #{self.streamed[1]}"
        if self.impossible and self.high_water is not None:
            where += (f"; ClickHouse's high-water mark {format_lsn(self.high_water[0])} is past the server's WAL "
                      "position, so `cdc run` skips every row: an unexpected row set it")
        reached = "has passed" if self.reached(lsn) else "has not reached"
        return f"{where}; delivery {reached} the snapshot"


@dataclass(frozen=True, slots=True)
class ShardedDelivery:
    """Every shard's delivery (of every generation the outbox has: a reshard's old one drains meanwhile)."""

    parts: tuple[tuple[Shard, Delivery], ...]

    @property
    def slot_holds_rows(self) -> bool:
        return any(d.slot_holds_rows for _, d in self.parts)

    def waiting(self, lsn: int) -> bool:
        return any(d.waiting(lsn) for _, d in self.parts)

    def reached(self, lsn: int) -> bool:
        return all(d.reached(lsn) for _, d in self.parts)

    def describe(self, lsn: int) -> str:
        behind = [d for _, d in self.parts if not d.reached(lsn)]
        if not behind:
            return f"all {len(self.parts)} shards' delivery has passed the snapshot"
        first = behind[0].describe(lsn)
        more = f" (and {len(behind) - 1} more shards behind)" if len(behind) > 1 else ""
        return f"{len(self.parts) - len(behind)} of {len(self.parts)} shards have passed the snapshot; {first}{more}"

    def per_shard(self, lsn: int) -> list[dict[str, Any]]:
        return [{"slot": shard.slot, "shard": shard.label, "stream": shard.stream, "reached": d.reached(lsn),
                 "delivered": d.describe(lsn)} for shard, d in self.parts]

    def pending(self, dsn: str, outbox: tuple[str, str], upto_lsn: int, timeout: float) -> Pending:
        """What the slots of the shards behind still hold (each read up to ``upto_lsn``), joined."""
        joined = Pending()
        for shard, d in self.parts:
            if not d.slot_holds_rows or d.reached(upto_lsn):
                continue  # its absent rows will not arrive by themselves: missing
            found = read_pending(dsn, slot=shard.slot, publication=shard.publication, outbox=outbox,
                                 upto_lsn=upto_lsn, stored=d.high_water, timeout=timeout)
            joined.in_flight |= found.in_flight
            joined.rows += found.rows
            if not found.complete:
                joined.complete = False
                joined.reason = f"shard slot {shard.slot}: {found.reason}"
        return joined

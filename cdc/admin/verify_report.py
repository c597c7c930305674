"""What ``cdc verify`` found, as a table for people and a JSON document for scripts; and its exit code.

Exit 0: every unique_id of the outbox's scope is stored (events or dead
letters) or still in flight, and ClickHouse holds nothing in scope that the
outbox does not explain. Exit 1: some are missing or unexpected. Exit 2: it
cannot tell (rows not in ClickHouse while delivery has not passed the
snapshot and the slot could not be read), or could not compare at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..lsn import format_lsn

AGREE, DIFFER, UNKNOWN = 0, 1, 2
STATUS = {AGREE: "agree", DIFFER: "differ", UNKNOWN: "cannot tell"}


@dataclass(slots=True)
class Tally:
    """How many ids fell in one class, and the first few of them, named."""

    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "first": self.first}


@dataclass(slots=True)
class Report:
    outbox: str
    clickhouse: str
    since: str | None = None
    from_lsn: int | None = None
    low_id: int | None = None
    snapshot_lsn: int = 0
    delivered: str = ""            # where delivery stands, in words
    outbox_rows: int = 0
    outbox_ids: int = 0
    clickhouse_ids: int = 0
    buckets: int = 0
    differing_buckets: int = 0
    missing: Tally = field(default_factory=Tally)
    unexpected: Tally = field(default_factory=Tally)
    in_flight: Tally = field(default_factory=Tally)
    undetermined: Tally = field(default_factory=Tally)
    undetermined_reason: str | None = None
    read: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    repair: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """After a repair, what is left: the rows it delivered and deleted no longer count."""
        missing, unexpected = self.missing.count, self.unexpected.count
        if self.repair is not None:
            missing = max(0, missing - self.repair["delivered"])
            unexpected = max(0, unexpected - self.repair["deleted"])
        if missing or unexpected:
            return DIFFER
        return UNKNOWN if self.undetermined.count else AGREE

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": STATUS[self.exit_code], "exit_code": self.exit_code,
            "repaired": self.repair is not None and self.exit_code == AGREE and bool(self.missing.count or self.unexpected.count),
            "outbox": self.outbox, "clickhouse": self.clickhouse,
            "scope": {"since": self.since, "from_lsn": None if self.from_lsn is None else format_lsn(self.from_lsn),
                      "first_outbox_id": self.low_id},
            "snapshot_lsn": format_lsn(self.snapshot_lsn), "delivered": self.delivered,
            "outbox_rows": self.outbox_rows, "outbox_ids": self.outbox_ids, "clickhouse_ids": self.clickhouse_ids,
            "buckets": {"total": self.buckets, "differing": self.differing_buckets},
            "missing": self.missing.as_dict(), "unexpected": self.unexpected.as_dict(),
            "in_flight": self.in_flight.as_dict(),
            "undetermined": self.undetermined.as_dict() | {"reason": self.undetermined_reason},
            "read": self.read, "seconds": self.seconds, "repair": self.repair,
        }

    def lines(self) -> list[str]:
        scope = f"ids from {self.low_id}" if self.low_id is not None else "no rows"
        if self.since:
            scope += f", created since {self.since}"
        if self.from_lsn is not None:
            scope += f", committed from {format_lsn(self.from_lsn)}"
        out = [
            f"outbox       {self.outbox} ({scope}) at {format_lsn(self.snapshot_lsn)}: "
            f"{self.outbox_rows} rows, {self.outbox_ids} distinct unique_ids",
            f"clickhouse   {self.clickhouse}: {self.clickhouse_ids} distinct unique_ids in scope "
            "(events and dead letters)",
            f"delivery     {self.delivered}",
            f"buckets      {self.differing_buckets} of {self.buckets} differ",
        ]
        for label, tally, note in (
            ("missing", self.missing, "`cdc verify --repair` delivers them"),
            ("unexpected", self.unexpected, "no outbox row explains them; "
                                            "`cdc verify --repair --delete-unexpected` removes them"),
            ("in flight", self.in_flight, "committed after what is stored: the slot holds them, `cdc run` delivers them"),
            ("undetermined", self.undetermined, self.undetermined_reason or ""),
        ):
            if tally.count:
                names = ", ".join(str(x["unique_id"]) for x in tally.first)
                more = ", ..." if tally.count > len(tally.first) else ""
                out.append(f"{label:<12} {tally.count}: {names}{more} ({note})")
        if self.repair is not None:
            r = self.repair
            out.append(f"repair       {r['delivered']} rows delivered ({r['events_stored']} events, "
                       f"{r['dead_letters_stored']} dead letters), {r['deleted']} unexpected deleted")
        headline = {AGREE: "AGREE", DIFFER: "DIFFER", UNKNOWN: "CANNOT TELL"}[self.exit_code]
        if self.repair is not None and (self.missing.count or self.unexpected.count) and self.exit_code == AGREE:
            headline = "REPAIRED"
        out.append(f"{headline} ({self.seconds:.1f}s)")
        return out

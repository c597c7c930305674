"""Replica health of the sink's tables when they are Replicated*MergeTree (a ClickHouse cluster).

Read from the replica cdc is connected to: ``system.replicas`` (its ZooKeeper
session, how many replicas are active, its replication queue and delay) and
``system.replication_queue`` (entries that keep failing). A plain MergeTree
sink has no rows there and gets no findings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Query = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]

# Seconds behind the freshest replica past which a replica is called lagging.
MAX_DELAY_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ReplicaHealth:
    table: str
    replica: str
    is_readonly: bool
    is_session_expired: bool
    active_replicas: int
    total_replicas: int
    queue_size: int
    inserts_in_queue: int
    absolute_delay: int
    failing_entries: int
    last_exception: str

    def summary(self) -> str:
        return (f"{self.table} on replica {self.replica}: {self.active_replicas} of {self.total_replicas} active, "
                f"queue {self.queue_size}, {self.absolute_delay}s behind")

    def problems(self) -> list[tuple[bool, str]]:
        """(critical, message) pairs; critical ones stop inserts into this replica."""
        where = f"replica {self.replica} of {self.table}"
        found: list[tuple[bool, str]] = []
        if self.is_readonly or self.is_session_expired:
            found.append((True, f"{where} is read-only (no ZooKeeper session): inserts fail until it reconnects"))
        if self.active_replicas < self.total_replicas:
            found.append((False, f"{self.active_replicas} of {self.total_replicas} replicas of {self.table} are "
                                 "active: the others catch up when back"))
        if self.absolute_delay > MAX_DELAY_SECONDS:
            found.append((False, f"{where} is {self.absolute_delay}s behind"))
        if self.failing_entries:
            found.append((False, f"{where} has {self.failing_entries} replication queue entries failing: "
                                 f"{self.last_exception[:200]}"))
        return found

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def replica_health(query: Query, database: str, tables: Sequence[str]) -> list[ReplicaHealth]:
    """One row per replicated table of ``tables`` in ``database``, as this replica sees it."""
    rows = query(
        "SELECT table, replica_name, is_readonly, is_session_expired, active_replicas, total_replicas, "
        "queue_size, inserts_in_queue, absolute_delay FROM system.replicas "
        "WHERE database = %(db)s AND table IN %(tables)s ORDER BY table",
        {"db": database, "tables": tuple(tables)},
    )
    if not rows:
        return []
    failing = {
        str(r[0]): (int(r[1]), str(r[2]))
        for r in query(
            "SELECT table, count(), any(last_exception) FROM system.replication_queue "
            "WHERE database = %(db)s AND table IN %(tables)s AND last_exception != '' GROUP BY table",
            {"db": database, "tables": tuple(tables)},
        )
    }
    return [
        ReplicaHealth(
            table=str(r[0]), replica=str(r[1]), is_readonly=bool(r[2]), is_session_expired=bool(r[3]),
            active_replicas=int(r[4]), total_replicas=int(r[5]), queue_size=int(r[6]),
            inserts_in_queue=int(r[7]), absolute_delay=int(r[8]),
            failing_entries=failing.get(str(r[0]), (0, ""))[0], last_exception=failing.get(str(r[0]), (0, ""))[1],
        )
        for r in rows
    ]

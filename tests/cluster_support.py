"""The sink's schema in its cluster form (sql/clickhouse/cluster_*.sql), rendered for tests.

cdc migrate does not render it yet (the --clickhouse-cluster wiring waits for
the sink's reshape); until then tests render the templates themselves.
"""

from __future__ import annotations

from importlib.resources import files
from string import Template

STATEMENTS = ("cluster_database", "cluster_events", "cluster_dead_letter", "cluster_progress",
              "cluster_progress_mv", "cluster_events_all")
OLD_TYPES = {"timestamp": "DateTime('UTC')", "label": "String"}
MODERN_TYPES = {"timestamp": "DateTime64(6, 'UTC')", "label": "LowCardinality(String)"}
COLUMNS = ("unique_id, event_type, occurred_at, environment, payload, metadata_version, outbox_id, "
           "commit_lsn, commit_seq, committed_at, inserted_at")


def render(database: str, cluster: str, types: dict[str, str]) -> list[str]:
    def q(name: str) -> str:
        return f"`{name}`"

    values = {
        "cluster": q(cluster), "database": q(database), "events": f"{q(database)}.{q('events')}",
        "events_local": q("events"),
        "dead_letter": f"{q(database)}.{q('events_dead_letter')}",
        "progress": f"{q(database)}.{q('events_cdc_progress')}",
        "progress_mv": f"{q(database)}.{q('events_cdc_progress_mv')}",
        "events_all": f"{q(database)}.{q('events_all')}",
        **{f"zk_{kind}": f"/clickhouse/tables/{{shard}}/{database}/{table}" for kind, table in (
            ("events", "events"), ("dead_letter", "events_dead_letter"), ("progress", "events_cdc_progress"))},
        **types,
    }
    folder = files("cdc._sql.clickhouse")
    return [Template(folder.joinpath(f"{name}.sql").read_text().strip()).substitute(values) for name in STATEMENTS]

"""The sink's schema in its cluster form, as cdc renders it (cdc/sink/clickhouse/ddl.py), for tests that
make the tables without `cdc migrate`."""

from __future__ import annotations

from cdc.sink.clickhouse.ddl import Capabilities, SchemaNames, render_schema

OLD = Capabilities((18, 16))
MODERN = Capabilities((24, 8))
COLUMNS = ("unique_id, event_type, occurred_at, environment, payload, metadata_version, outbox_id, "
           "commit_lsn, commit_seq, committed_at, inserted_at")


def render(database: str, cluster: str, capabilities: Capabilities = OLD) -> list[str]:
    """Every statement, the database first."""
    return [statement for _, statement in render_schema(SchemaNames(database, "events"), capabilities, cluster)]

"""The ClickHouse schema of the sink: names, server capabilities and the DDL rendered from ``sql/clickhouse``.

Templates use ``string.Template`` placeholders; only validated, backquoted
identifiers and our own type names are ever substituted into them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from string import Template
from typing import Final

from ...core.events import EVENT_COLUMNS
from ..base import SinkConfigError

_IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Creation order: the view needs both of its tables.
TEMPLATES: Final = ("database", "events", "dead_letter", "progress", "progress_mv")
# The cluster form (sql/clickhouse/cluster_*.sql): the same, ON CLUSTER and
# Replicated, plus a Distributed table over the events for queries.
CLUSTER_TEMPLATES: Final = (*TEMPLATES, "events_all")

# DateTime64 and a non-experimental LowCardinality both arrived by ClickHouse 20.1.
MODERN_SINCE: Final = (20, 1)

EVENTS_COLUMNS: Final = (*EVENT_COLUMNS, "inserted_at")
DEAD_LETTER_COLUMNS: Final = (
    "commit_lsn", "commit_seq", "committed_at", "relation", "reason", "row_json", "inserted_at",
)
PROGRESS_COLUMNS: Final = ("unique_id", "commit_lsn", "commit_seq", "committed_at", "inserted_at")


def quote_identifier(name: str, what: str) -> str:
    """``name`` in backquotes, or SinkConfigError when it is not a plain identifier."""
    if not _IDENTIFIER_RE.match(name):
        raise SinkConfigError(
            f"{what} {name!r} is not a plain identifier: use letters, digits and _ (not first a digit)"
        )
    return f"`{name}`"


def parse_version(text: str) -> tuple[int, ...]:
    """``'18.16.1'`` -> ``(18, 16, 1)``; trailing non-numeric parts (``'-testing'``) are ignored."""
    numbers: list[int] = []
    for part in text.strip().split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    if not numbers:
        raise ValueError(f"{text!r} is not a ClickHouse version")
    return tuple(numbers)


class Capabilities:
    """The column types this server version gets for new tables."""

    def __init__(self, version: tuple[int, ...]) -> None:
        self.version = version
        self.modern = version >= MODERN_SINCE
        self.timestamp_sql = "DateTime64(6, 'UTC')" if self.modern else "DateTime('UTC')"
        self.label_sql = "LowCardinality(String)" if self.modern else "String"

    def __repr__(self) -> str:
        return f"Capabilities(version={'.'.join(map(str, self.version))})"


@dataclass(frozen=True, slots=True)
class TableNames:
    """Plain names of the sink's objects inside ``database``, for system-table lookups."""

    database: str
    events: str
    dead_letter: str
    progress: str
    progress_mv: str
    events_all: str


class SchemaNames:
    """The validated names of every object the sink owns, plain and quoted."""

    def __init__(self, database: str, table: str) -> None:
        self._database_sql = quote_identifier(database, "ClickHouse database")
        quote_identifier(table, "ClickHouse table")
        self.plain = TableNames(
            database=database,
            events=table,
            dead_letter=f"{table}_dead_letter",
            progress=f"{table}_cdc_progress",
            progress_mv=f"{table}_cdc_progress_mv",
            events_all=f"{table}_all",
        )
        self.database = self._database_sql
        self.events = self._qualified(self.plain.events)
        self.dead_letter = self._qualified(self.plain.dead_letter)
        self.progress = self._qualified(self.plain.progress)
        self.progress_mv = self._qualified(self.plain.progress_mv)
        self.events_all = self._qualified(self.plain.events_all)

    def _qualified(self, name: str) -> str:
        return f"{self._database_sql}.{quote_identifier(name, 'ClickHouse table')}"

    def placeholders(self) -> dict[str, str]:
        return {
            "database": self.database,
            "events": self.events,
            "dead_letter": self.dead_letter,
            "progress": self.progress,
            "progress_mv": self.progress_mv,
        }


def render_schema(
    names: SchemaNames, capabilities: Capabilities, cluster: str | None = None
) -> list[tuple[str, str]]:
    """(template name, statement) pairs that create the schema, in order; each is idempotent.

    With ``cluster``, the ON CLUSTER form: Replicated engines whose ZooKeeper
    path holds the server's ``{shard}`` macro (and whose replica name is its
    ``{replica}``), so one statement makes every replica's tables.
    """
    values = names.placeholders() | {
        "timestamp": capabilities.timestamp_sql,
        "label": capabilities.label_sql,
    }
    if cluster is None:
        return [(name, _template(name).substitute(values)) for name in TEMPLATES]
    plain = names.plain
    values |= {
        "cluster": quote_identifier(cluster, "ClickHouse cluster"),
        "events_all": names.events_all,
        "events_local": quote_identifier(plain.events, "ClickHouse table"),
        # Plain identifiers only (checked above), so safe inside the quoted path.
        **{f"zk_{kind}": f"/clickhouse/tables/{{shard}}/{plain.database}/{table}" for kind, table in (
            ("events", plain.events), ("dead_letter", plain.dead_letter), ("progress", plain.progress))},
    }
    return [(name, _template(f"cluster_{name}").substitute(values)) for name in CLUSTER_TEMPLATES]


@cache
def _template(name: str) -> Template:
    text = files("cdc._sql.clickhouse").joinpath(f"{name}.sql").read_text(encoding="utf-8")
    return Template(text.strip())

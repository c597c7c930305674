"""Which PostgreSQL cluster this is (IDENTIFY_SYSTEM): LSNs mean something only on the cluster that wrote them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CheckpointError
from .connect import connect, version_text
from .replication import ReplicationConnection, ReplicationError


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    system_identifier: str
    timeline: int
    database: str
    host: str | None
    port: int | None
    user: str | None
    version: str


def identify(dsn: str) -> ServerIdentity:
    """Who the server is: IDENTIFY_SYSTEM over a replication connection (the role cdc runs as may do that)."""
    try:
        repl = ReplicationConnection.connect(dsn, application_name="cdc-checkpoint")
    except ReplicationError as exc:
        raise CheckpointError(f"cannot identify the server: {exc}") from None
    try:
        (systemid, timeline, _xlogpos, dbname), = repl.command("IDENTIFY_SYSTEM")
    except ReplicationError as exc:
        raise CheckpointError(f"cannot identify the server: {exc}") from None
    finally:
        repl.close()
    with connect(dsn, application_name="cdc-checkpoint") as conn:
        info = conn.info
        host = info.host if info.host and not info.host.startswith("/") else None
        return ServerIdentity(
            system_identifier=str(systemid), timeline=int(timeline or 0), database=str(dbname or info.dbname),
            host=host, port=int(info.port) if info.port else None, user=info.user,
            version=version_text(info.server_version),
        )

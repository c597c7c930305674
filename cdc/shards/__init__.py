"""Sharded slots: the outbox's rows split by a hash of unique_id over N row-filtered publications and N slots.

``layout`` names things, ``catalog`` keeps the generations in PostgreSQL, ``setup``
creates them (``cdc migrate --shards N``), ``show`` reports on them (``cdc shards show``).
"""

from __future__ import annotations

from ..replication.preflight import PreflightError


class ShardError(PreflightError):
    """A sharding step refused: the message says why and what to do (``cdc: error: ...``, exit 1)."""


__all__ = ["ShardError"]

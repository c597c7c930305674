"""Sharded slots: the outbox's rows split by a hash of unique_id over N row-filtered publications and N slots.

``layout`` names things (no I/O). PostgreSQL keeps the generations (cdc/pg/shards.py,
made by cdc/pg/shard_setup.py); cdc/admin/shards.py reports on them, cdc/admin/reshard.py
changes their number, cdc/workers/ streams them.
"""

from __future__ import annotations

from ..errors import UserError


class ShardError(UserError):
    """A sharding step refused: the message says why and what to do (``cdc: error: ...``, exit 1)."""


__all__ = ["ShardError"]

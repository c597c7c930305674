"""What the DBA commands (``cdc status``, ``doctor``, ``outbox prune``, ``checkpoint``, ``backfill``) do, apart
from the command line: plain functions over PostgreSQL (cdc.pg) and the sink's admin view (cdc.sink).

Every refusal is an ``AdminError`` (a ``cdc.errors.UserError``) whose message is one line saying why and what
to do; the ``cdc`` group prints it as ``cdc: error: ...`` and exits 1.
"""

from __future__ import annotations

from ..errors import AdminError

__all__ = ["AdminError"]

"""What the DBA commands (``cdc slot``, ``publication``, ``status``, ``doctor``, ``outbox``, ``checkpoint``,
``backfill``) do, apart from the command line: plain functions over a PostgreSQL connection and the sink.

Every refusal is an ``AdminError`` whose message is one line saying why and what to do. It subclasses
PreflightError so the ``cdc`` group prints it as ``cdc: error: ...`` and exits 1.
"""

from __future__ import annotations

from ..pg.preflight import PreflightError


class AdminError(PreflightError):
    """A DBA command refused, or the server refused it: the message says what to do."""


__all__ = ["AdminError"]

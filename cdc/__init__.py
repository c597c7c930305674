"""cdc: stream outbox events from PostgreSQL into ClickHouse through a pgoutput slot.

``cdc.emit(conn, event_type, payload)`` writes one event from an application
(see cdc/app/emit.py). It is imported on first use, so ``import cdc`` stays
cheap for the command line and for applications that only need the Django
integration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app.emit import EmitError, Event, OutsideTransactionError, emit, emit_many

_LAZY = frozenset({"emit", "emit_many", "Event", "EmitError", "OutsideTransactionError"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .app import emit as module

        return getattr(module, name)
    raise AttributeError(f"module 'cdc' has no attribute {name!r}")


__all__ = ["EmitError", "Event", "OutsideTransactionError", "__version__", "emit", "emit_many"]

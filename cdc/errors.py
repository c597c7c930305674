"""The refusals a person sees: cdc cannot do what was asked, and one line says why and what to do.

The command line prints any ``UserError`` as ``cdc: error: <message>`` and
exits 1; nothing was acknowledged. The subclasses say who refused, for the
callers that react differently (``ConnectError`` is worth retrying).
"""

from __future__ import annotations


class UserError(Exception):
    """cdc cannot do what was asked; the message, one line, says why and what to do."""


class PreflightError(UserError):
    """A precondition is not met; the message says how to fix it."""


class ConnectError(PreflightError):
    """PostgreSQL did not accept a connection: it may be restarting, so callers may retry."""


class PipelineError(UserError):
    """The pipeline cannot go on; nothing unstored was acknowledged."""


class SlotBusy(PreflightError):
    """Another process streams the slot: a lone run says so; a worker waits and tries again."""


class AdminError(UserError):
    """A DBA command refused, or the server refused it: the message says what to do."""


class CheckpointError(AdminError):
    """A checkpoint file that cannot be used, or a server that cannot be identified: the message says why."""


class ReconcileError(UserError):
    """``cdc verify`` cannot compare (a missing table, a bad --since or LSN, a server refusal): it cannot tell."""

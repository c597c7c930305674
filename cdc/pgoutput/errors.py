"""The one error the decoder raises on bytes it cannot decode."""

from __future__ import annotations


class PgOutputError(Exception):
    """Malformed or unknown pgoutput bytes.

    ``offset`` is where in the message decoding stopped; ``message_type`` is the
    message's first byte as a one-character string ('?' for an empty message).
    """

    def __init__(self, reason: str, *, offset: int, message_type: str) -> None:
        super().__init__(f"malformed pgoutput {message_type!r} message at byte {offset}: {reason}")
        self.reason = reason
        self.offset = offset
        self.message_type = message_type

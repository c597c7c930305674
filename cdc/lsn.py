"""Log sequence numbers: PostgreSQL prints them as ``X/Y``, the protocol carries them as uint64."""

from __future__ import annotations

import re

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class LsnError(ValueError):
    """A string that is not an LSN of the form ``16/B374D848``."""


def parse_lsn(text: str) -> int:
    match = _LSN_RE.match(text.strip())
    if match is None:
        raise LsnError(f"{text!r} is not an LSN: write it as PostgreSQL prints it, for example 0/16B3748")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"

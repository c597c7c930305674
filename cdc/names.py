"""Validation of the names that reach SQL: slots, publications, schemas, tables.

Names are checked here once, then always quoted as identifiers; nothing from a
flag is ever pasted into SQL as text.
"""

from __future__ import annotations

import re
from typing import Final

# Replication slot names may contain only lower case letters, digits and underscores.
_SLOT: Final = re.compile(r"^[a-z0-9_]{1,63}$")
_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class NameError_(ValueError):
    """A name that cannot be used as a slot, publication, schema or table name."""


def slot_name(value: str) -> str:
    if not _SLOT.match(value):
        raise NameError_(f"invalid slot name {value!r}: use 1-63 lower case letters, digits and underscores")
    return value


def identifier(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise NameError_(
            f"invalid {what} name {value!r}: use a letter or underscore, then letters, digits or underscores (max 63)"
        )
    return value


def quote_ident(value: str) -> str:
    """Quote a validated identifier for SQL (PostgreSQL and ClickHouse both accept double quotes)."""
    return '"' + value.replace('"', '""') + '"'

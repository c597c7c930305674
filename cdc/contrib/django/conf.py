"""The Django settings the integration reads, checked once where they are used.

CDC_OUTBOX_SCHEMA (default "public") and CDC_OUTBOX_TABLE (default "outbox"):
where the outbox lives; the same names ``cdc migrate --outbox-schema/--outbox-table``
take. CDC_ENVIRONMENT: the environment emit() records when none is given (else
the CDC_ENVIRONMENT environment variable, else '').
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ...app.row import default_environment
from ...names import NameError_, identifier, quote_ident


def _name(setting: str, default: str, what: str) -> str:
    value = getattr(settings, setting, default)
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"settings.{setting} must be a str, got {type(value).__name__}")
    try:
        return identifier(value, what)
    except NameError_ as exc:
        raise ImproperlyConfigured(f"settings.{setting}: {exc}") from None


def outbox_schema() -> str:
    return _name("CDC_OUTBOX_SCHEMA", "public", "schema")


def outbox_table() -> str:
    return _name("CDC_OUTBOX_TABLE", "outbox", "table")


def qualified_table() -> str:
    """``"schema"."table"``: Django leaves a db_table already in quotes as it is."""
    return f"{quote_ident(outbox_schema())}.{quote_ident(outbox_table())}"


def environment() -> str:
    value = getattr(settings, "CDC_ENVIRONMENT", None)
    return default_environment() if value is None else value


def require_postgresql(connection: Any) -> None:
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"cdc's outbox needs PostgreSQL, but database {connection.alias!r} is {connection.vendor}: "
            "point it at PostgreSQL, or route the 'cdc' app away from it (a database router)"
        )

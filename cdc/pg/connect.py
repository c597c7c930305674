"""PostgreSQL plumbing shared by the admin modules: connect, and turn server errors into one-line refusals."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ..redact import dsn_password, redact_dsn, scrub
from .preflight import ConnectError
from ..admin import AdminError

Conn = psycopg.Connection[tuple[Any, ...]]


def connect(dsn: str, *, timeout: float = 10.0, application_name: str = "cdc-admin") -> Conn:
    """An autocommit connection, or ConnectError naming the server (never the password)."""
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, int(timeout)), application_name=application_name,
        )
    except psycopg.Error as exc:
        reason = scrub(" ".join(str(exc).split()), dsn_password(dsn))
        raise ConnectError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}; check CDC_PG_DSN") from None
    # Timestamps we print or parse are UTC, in ISO form, whatever the role's defaults say.
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET DateStyle = 'ISO, YMD'")
    return conn


def describe(exc: BaseException, dsn: str = "") -> str:
    """A psycopg error as one line, without a password."""
    text = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
    hint = getattr(getattr(exc, "diag", None), "message_hint", None)
    line = " ".join(str(text).split())
    if hint:
        line += f" ({' '.join(hint.split())})"
    return scrub(line, dsn_password(dsn)) if dsn else line


@contextmanager
def refusals(what: str, dsn: str = "") -> Iterator[None]:
    """Turn a server error during ``what`` into an AdminError: ``cannot <what>: <server's reason>``."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise AdminError(f"cannot {what}: {describe(exc, dsn)}; ask a superuser for the privilege") from None
    except psycopg.errors.LockNotAvailable as exc:
        raise AdminError(f"cannot {what}: {describe(exc, dsn)}; the object is busy, try again later") from None
    except psycopg.Error as exc:
        raise AdminError(f"cannot {what}: {describe(exc, dsn)}") from None


def server_version(conn: Conn) -> int:
    return int(conn.info.server_version)


def version_text(num: int) -> str:
    """180001 -> '18.1'; 90624 -> '9.6.24'."""
    if num >= 100000:
        return f"{num // 10000}.{num % 10000}"
    return f"{num // 10000}.{num // 100 % 100}.{num % 100}"


def setting(conn: Conn, name: str) -> str | None:
    row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])

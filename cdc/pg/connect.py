"""How cdc connects to PostgreSQL, the session settings it pins, and server errors as one-line refusals.

Every ordinary connection comes from ``connect``; the replication connection
(cdc.pg.replication) pins the same settings through its start-up options.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import psycopg

from ..errors import AdminError, ConnectError
from ..redact import dsn_password, redact_dsn, scrub

Conn = psycopg.Connection[tuple[Any, ...]]

# Text values arrive formatted by the session's settings: pin the ones cdc parses or prints (timestamps
# in UTC and ISO form above all) instead of inheriting whatever the role or the server defaults to.
PINNED_SETTINGS: Final[Mapping[str, str]] = {
    "TimeZone": "UTC", "DateStyle": "ISO,YMD", "IntervalStyle": "postgres", "extra_float_digits": "3",
}
_PIN_SQL: Final = "SELECT " + ", ".join(f"set_config('{name}', %s, false)" for name in PINNED_SETTINGS)


def connect(dsn: str, *, timeout: float = 10.0, application_name: str = "cdc") -> Conn:
    """An autocommit connection with PINNED_SETTINGS, or ConnectError naming the server (never the password)."""
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, int(timeout)), application_name=application_name,
        )
    except psycopg.Error as exc:
        reason = scrub(" ".join(str(exc).split()), dsn_password(dsn))
        raise ConnectError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}; check CDC_PG_DSN") from None
    conn.execute(_PIN_SQL, tuple(PINNED_SETTINGS.values()))
    return conn


def startup_options(existing: str = "") -> str:
    """libpq ``options`` that pin PINNED_SETTINGS at start-up, after ``existing`` (the DSN's own)."""
    pinned = " ".join(f"-c {name}={value}" for name, value in PINNED_SETTINGS.items())
    return f"{existing} {pinned}".strip()


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
        raise AdminError(
            f"cannot {what}: {describe(exc, dsn)}; fix what PostgreSQL reports (`cdc doctor` checks every "
            "precondition), then run the command again"
        ) from None


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

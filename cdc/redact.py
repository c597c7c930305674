"""Keep passwords out of everything we print: logs, errors, --json output."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_MASK = "***"
# key=value conninfo strings and URL query parameters both can carry a password.
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# URL query parameters whose values are secrets (libpq's and clickhouse-driver's TLS key passphrase).
_SECRET_PARAMS = re.compile(r"(?i)(^|&)(keypass|password|sslpassword)=[^&]*")


def redact_url(url: str) -> str:
    """The URL with its password (and any secret query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        # Unparsable: nothing tells where a password would end, so show nothing of it.
        return _MASK
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hostport}" if colon else netloc
    query = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}={_MASK}", parts.query)
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    if query:
        text += f"?{query}"
    if parts.fragment:
        text += f"#{parts.fragment}"
    return text


def redact_dsn(dsn: str) -> str:
    """A libpq DSN (URI or key=value) with its password masked."""
    if "://" in dsn:
        return redact_url(dsn)
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - whatever libpq cannot parse is masked by pattern
        return _KV_PASSWORD.sub(rf"\1{_MASK}", dsn)
    if "password" in params:
        params["password"] = _MASK
    return make_conninfo("", **params)


def scrub(text: str, *secrets: str | None) -> str:
    """Remove every given secret from text that may have come from a server or library."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text


def dsn_password(dsn: str) -> str | None:
    try:
        value = conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001 - no parsable DSN, no password to know of
        return None
    return str(value) if value is not None else None

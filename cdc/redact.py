"""Keep passwords out of everything we print: logs, errors, --json output."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_MASK = "***"
# key=value conninfo strings and URL query parameters both can carry a password.
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db``; also masks ?password=."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _KV_PASSWORD.sub(rf"\1{_MASK}", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + _MASK
        netloc = f"{userinfo}@{hostport}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", rf"\1\2{_MASK}", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_dsn(dsn: str) -> str:
    """A libpq DSN (URI or key=value) with its password masked."""
    if "://" in dsn:
        return redact_url(dsn)
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
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
    except Exception:
        return None
    return str(value) if value is not None else None

"""Where the ClickHouse sink connects: parse ``CDC_CLICKHOUSE_URL`` and keep its password out of sight.

The URL looks like ``clickhouse://user:password@host:port/database?secure=1``
(``clickhouses://`` turns TLS on). Replicas of a cluster may follow the first
host, comma-separated (``clickhouse://user@h1:9000,h2:9000/db``): the driver
connects to the first that answers, in that order (clickhouse-driver's
``alt_hosts``), and again on every reconnect. The password may instead come from the
``password`` argument, ``CDC_CLICKHOUSE_PASSWORD`` or the file named by
``CDC_CLICKHOUSE_PASSWORD_FILE``, in that order after the URL's own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

from ...redact import redact_url, scrub
from ..base import SinkConfigError

__all__ = ["PASSWORD_ENV", "PASSWORD_FILE_ENV", "REDACTED", "ClickHouseTarget", "parse_clickhouse_url",
           "redact_url", "scrub"]

PASSWORD_ENV: Final = "CDC_CLICKHOUSE_PASSWORD"
PASSWORD_FILE_ENV: Final = "CDC_CLICKHOUSE_PASSWORD_FILE"
REDACTED: Final = "***"

_SCHEMES: Final = {"clickhouse": False, "clickhouses": True}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_BOOL_PARAMS: Final = frozenset({"secure", "verify", "check_hostname"})
_TEXT_PARAMS: Final = frozenset(
    {"ca_certs", "certfile", "keyfile", "keypass", "ciphers", "server_hostname", "client_name"}
)
_SECONDS_PARAMS: Final = frozenset({"connect_timeout", "send_receive_timeout", "sync_request_timeout"})
# "auto" (the default) compresses with lz4 when its modules are installed, except
# to a server on this machine (see connection.is_loopback).
_COMPRESSION: Final = frozenset({"auto", "none", "lz4", "lz4hc", "zstd"})
_KNOWN_PARAMS: Final = _BOOL_PARAMS | _TEXT_PARAMS | _SECONDS_PARAMS | {"compression"}


@dataclass(frozen=True, slots=True)
class ClickHouseTarget:
    """Everything needed to open a connection; ``repr`` never shows a secret."""

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    secure: bool
    compression: str
    # TLS and timeout options for clickhouse-driver's Client, already typed.
    options: Mapping[str, Any] = field(repr=False)
    redacted_url: str
    # The other replicas after the first, as (host, port), tried in order.
    alt_hosts: tuple[tuple[str, int], ...] = ()

    @property
    def address(self) -> str:
        """host:port (each replica's, comma-separated) as a person writes it (IPv6 in brackets), safe for messages."""
        return ",".join(_hostport(host, port) for host, port in ((self.host, self.port), *self.alt_hosts))

    @property
    def alt_hosts_option(self) -> str | None:
        """``alt_hosts`` as clickhouse-driver takes it, or None with one host."""
        return ",".join(_hostport(h, p) for h, p in self.alt_hosts) or None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a message, in every spelling we know of."""
        found: list[str] = []
        for value in (self.password, str(self.options.get("keypass", ""))):
            # A URL carries the password percent-encoded; errors may echo either form.
            for spelling in (value, quote(value, safe=""), quote(value)):
                if spelling and spelling not in found:
                    found.append(spelling)
        # Longest first, so a secret containing another is replaced whole.
        return tuple(sorted(found, key=len, reverse=True))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_clickhouse_url(
    url: str,
    *,
    password: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClickHouseTarget:
    """Turn a URL into a ClickHouseTarget, or raise SinkConfigError saying what is wrong (never the password)."""
    env = os.environ if environ is None else environ
    safe = redact_url(url)
    try:
        parts, others = _split_hosts(url.strip())
        port_number = parts.port
    except ValueError as exc:
        raise SinkConfigError(f"CDC_CLICKHOUSE_URL {safe} is not a valid URL: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise SinkConfigError(
            f"CDC_CLICKHOUSE_URL {safe} must start with clickhouse:// or clickhouses://"
        )
    params = _query_params(parts.query, safe)
    secure = _SCHEMES[parts.scheme]
    if "secure" in params:
        secure = bool(params.pop("secure"))
    compression = str(params.pop("compression", "auto"))
    database = unquote(parts.path.lstrip("/")) or "default"
    if "/" in database:
        raise SinkConfigError(f"CDC_CLICKHOUSE_URL {safe}: the path must be one database name")
    default_port = 9440 if secure else 9000
    try:
        alt_hosts = tuple(_host_and_port(other, default_port) for other in others)
    except ValueError as exc:
        raise SinkConfigError(f"CDC_CLICKHOUSE_URL {safe}: a replica after the first host is not host:port ({exc})") from None
    return ClickHouseTarget(
        host=parts.hostname or "localhost",
        port=port_number or default_port,
        database=database,
        user=unquote(parts.username) if parts.username else "default",
        password=_choose_password(password, parts.password, env),
        secure=secure,
        compression=compression,
        options=params,
        redacted_url=safe,
        alt_hosts=alt_hosts,
    )


def _split_hosts(url: str) -> tuple[SplitResult, list[str]]:
    """The URL with only its first host, and the hosts after it (``h1:9000,h2:9000``)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    if not others:
        return parts, []
    if not first or any(not other.strip() for other in others):
        raise ValueError("empty host in the host list")
    return parts._replace(netloc=f"{userinfo}{at}{first}"), [other.strip() for other in others]


def _host_and_port(text: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(f"//{text}")
    if not parts.hostname or parts.username is not None or parts.path:
        raise ValueError(f"{text!r}")
    return parts.hostname, parts.port or default_port


def _query_params(query: str, safe: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "password":
            raise SinkConfigError(
                f"CDC_CLICKHOUSE_URL {safe}: put the password before the @ "
                f"or in {PASSWORD_ENV}, not in a query parameter"
            )
        if name not in _KNOWN_PARAMS:
            raise SinkConfigError(
                f"CDC_CLICKHOUSE_URL {safe}: unknown parameter {name!r}; "
                f"known ones are {', '.join(sorted(_KNOWN_PARAMS))}"
            )
        params[name] = _typed(name, value, safe)
    return params


def _typed(name: str, value: str, safe: str) -> Any:
    if name in _BOOL_PARAMS:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SinkConfigError(f"CDC_CLICKHOUSE_URL {safe}: {name} must be 1 or 0, not {value!r}")
    if name in _SECONDS_PARAMS:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise SinkConfigError(f"CDC_CLICKHOUSE_URL {safe}: {name} must be a positive number of seconds")
        return seconds
    if name == "compression":
        lowered = value.strip().lower()
        lowered = {"0": "none", "false": "none", "1": "lz4", "true": "lz4"}.get(lowered, lowered)
        if lowered not in _COMPRESSION:
            raise SinkConfigError(
                f"CDC_CLICKHOUSE_URL {safe}: compression must be one of {', '.join(sorted(_COMPRESSION))}"
            )
        return lowered
    return value


def _choose_password(explicit: str | None, in_url: str | None, env: Mapping[str, str]) -> str:
    if explicit is not None:
        return explicit
    if in_url is not None:
        return unquote(in_url)
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    path = env.get(PASSWORD_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                # Secret files usually end with a newline the password does not contain.
                return handle.read().rstrip("\r\n")
        except OSError as exc:
            raise SinkConfigError(
                f"cannot read the ClickHouse password from {PASSWORD_FILE_ENV}={path}: {exc.strerror}"
            ) from None
    return ""

"""structlog set-up, done once by the CLI entry point: JSON off a terminal, key=value on one."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog
from structlog.typing import FilteringBoundLogger


class SecretScrubber:
    """A last line of defence: masks known secrets in any string a log event carries."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True))

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self._secrets:
            for key, value in event.items():
                if isinstance(value, str):
                    for secret in self._secrets:
                        if secret in value:
                            value = value.replace(secret, "***")
                    event[key] = value
        return event


class _ForeignRecords(logging.Handler):
    """Records of libraries that use the standard logging module, as one line of ours.

    clickhouse-driver logs every failed connection with its traceback: left to
    Python's last-resort handler, that is a multi-line traceback on stderr per
    retry, in the middle of the JSON, and never seen by the SecretScrubber.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = " ".join(str(record.exc_info[1]).split())
            structlog.get_logger("cdc").log(record.levelno, record.getMessage(), **fields)
        except Exception:  # noqa: BLE001 - logging must never take the process down
            self.handleError(record)


def _orjson_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def configure(*, fmt: str = "auto", level: str = "info", secrets: Iterable[str | None] = ()) -> None:
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretScrubber(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per line (print() writes the newline apart): a sharded worker's
        # children share its stderr, and their lines must never run together.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ForeignRecords)]
    root.addHandler(_ForeignRecords(logging.WARNING))


def get_logger(**bound: Any) -> FilteringBoundLogger:
    return structlog.get_logger("cdc").bind(**bound)  # type: ignore[no-any-return]


class _Quiet:
    """A logger that lets warnings and errors through: reports, not connection chatter, belong on screen."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def bind(self, **kw: Any) -> _Quiet:
        return _Quiet(self._inner.bind(**kw))

    def debug(self, *a: Any, **kw: Any) -> None:
        pass

    info = debug

    def warning(self, *a: Any, **kw: Any) -> None:
        self._inner.warning(*a, **kw)

    def error(self, *a: Any, **kw: Any) -> None:
        self._inner.error(*a, **kw)


def quiet_logger() -> Any:
    return _Quiet(get_logger())

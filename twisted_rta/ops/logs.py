"""Log observer factory: readable console lines or one compact JSON object per line."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
)
from zope.interface import implementer

from twisted_rta.timefmt import iso_utc

# Keys of a twisted.logger event that are bookkeeping, not the caller's structured fields.
_INTERNAL_KEYS = frozenset(
    {
        "log_format",
        "log_level",
        "log_namespace",
        "log_source",
        "log_time",
        "log_logger",
        "log_failure",
        "log_text",
        "log_io",
        "log_legacy",
        "log_system",
        "log_flattened",
        "log_trace",
        "message",
        "format",
        "isError",
        "system",
        "time",
        "why",
        "failure",
    }
)


def _level_name(event: dict[str, Any]) -> str:
    level = event.get("log_level")
    if level is None:
        return "error" if event.get("isError") else "info"
    return str(level.name)


def _logger_name(event: dict[str, Any]) -> str:
    namespace = event.get("log_namespace")
    if namespace == "log_legacy" or not namespace:
        # twisted.python.log callers (e.g. the TCP port) only have a "system".
        return str(event.get("log_system") or event.get("system") or "-")
    return str(namespace)


def _message(event: dict[str, Any]) -> str:
    text = formatEvent(event)
    if not text and event.get("log_failure") is None:
        text = str(event.get("why") or "")
    return text


def _traceback(event: dict[str, Any]) -> str | None:
    failure = event.get("log_failure")
    if failure is None:
        return None
    try:
        return str(failure.getTraceback())
    except Exception:  # a broken failure must never kill the log observer
        return repr(failure)


def _json_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return str(value)


def format_json(event: dict[str, Any]) -> str:
    """One compact JSON object: time, level, logger, message, then structured fields."""
    record: dict[str, Any] = {
        "time": iso_utc(event.get("log_time") or 0.0),
        "level": _level_name(event),
        "logger": _logger_name(event),
        "message": _message(event),
    }
    for key, value in event.items():
        if key not in _INTERNAL_KEYS and not key.startswith("log_") and key not in record:
            record[key] = _json_value(value)
    traceback = _traceback(event)
    if traceback is not None:
        record["traceback"] = traceback
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


def format_console(event: dict[str, Any]) -> str:
    """``<time> [level] logger: message`` with a traceback, if any, on the following lines."""
    line = "{} [{}] {}: {}".format(
        iso_utc(event.get("log_time") or 0.0),
        _level_name(event),
        _logger_name(event),
        _message(event),
    )
    traceback = _traceback(event)
    if traceback is not None:
        line = line + "\n" + traceback.rstrip("\n")
    return line.replace("\n", "\n\t") + "\n"


FORMATTERS: Mapping[str, Callable[[dict[str, Any]], str]] = MappingProxyType(
    {"console": format_console, "json": format_json}
)


@implementer(ILogObserver)
class LineObserver:
    """Writes each event at or above ``level`` as one formatted line to a stream.

    ``configure`` swaps the format and level while running (SIGHUP reload).
    """

    def __init__(self, stream: IO[str], *, log_format: str, level: str) -> None:
        self._stream = stream
        self.configure(log_format=log_format, level=level)

    def configure(self, *, log_format: str, level: str) -> None:
        self._formatter = FORMATTERS[log_format]
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))

    def __call__(self, event: dict[str, Any]) -> None:
        if self._predicate(event) == PredicateResult.no:
            return
        self._stream.write(self._formatter(event))
        self._stream.flush()


def make_observer(stream: IO[str], *, log_format: str, level: str) -> LineObserver:
    """An observer that drops events below ``level`` and writes the rest in ``log_format``."""
    return LineObserver(stream, log_format=log_format, level=level)

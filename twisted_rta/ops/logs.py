"""Log lines: readable console lines or one compact JSON object per line, a level filter,
and where they go (stdout, stderr, or a file reopened on demand for logrotate)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import IO, Any, Protocol

from attrs import define
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
)
from zope.interface import implementer

from twisted_rta.timefmt import iso_utc

log = Logger()

#: ``logging.output`` values that name a standard stream rather than a file.
STDOUT = "stdout"
STDERR = "stderr"

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


class TextSink(Protocol):
    """What a LineObserver writes to: a text stream, or a ``LogOutput``."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


@define
class LogOutput:
    """Where the log lines go: stdout, stderr, or a file appended to (``target`` is then
    its absolute path), which ``reopen`` opens again by name: after logrotate moved it
    away, the lines go to a new file of that name."""

    target: str
    _stream: IO[str]

    @classmethod
    def open(cls, output: str) -> LogOutput:
        """``stdout``, ``stderr`` or a file path: the file is created if missing (not its
        directory) and appended to. Raises OSError when it cannot be opened."""
        if output == STDOUT:
            return cls(STDOUT, sys.stdout)
        if output == STDERR:
            return cls(STDERR, sys.stderr)
        # Absolute now: twistd changes to its --rundir after this, and reopen goes by name.
        path = os.path.abspath(output)
        return cls(path, _append(path))

    @property
    def is_file(self) -> bool:
        return self.target not in (STDOUT, STDERR)

    def write(self, text: str) -> None:
        self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def reopen(self) -> None:
        """Open the file again by name (SIGHUP): nothing for stdout and stderr. If it cannot
        be opened, the lines keep going to the old file and an error says why."""
        if not self.is_file:
            return
        try:
            stream = _append(self.target)
        except OSError as error:
            log.error(
                "cannot reopen the log file {path}: {reason}; still writing to the old one",
                path=self.target,
                reason=error.strerror or str(error),
            )
            return
        old, self._stream = self._stream, stream
        old.close()

    def close(self) -> None:
        if self.is_file:
            self._stream.close()


def _append(path: str) -> IO[str]:
    # Line-buffered: each log line reaches the file when it is written.
    return open(path, "a", encoding="utf-8", buffering=1)


@implementer(ILogObserver)
class LineObserver:
    """Writes each event at or above ``level`` as one formatted line to a stream.

    ``configure`` swaps the format and level while running (SIGHUP reload).
    """

    def __init__(self, stream: TextSink, *, log_format: str, level: str) -> None:
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


def make_observer(stream: TextSink, *, log_format: str, level: str) -> LineObserver:
    """An observer that drops events below ``level`` and writes the rest in ``log_format``."""
    return LineObserver(stream, log_format=log_format, level=level)

"""Value parsers for config keys: each takes (value, key path) and names the path in its error."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


Parser = Callable[[Any, str], Any]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*$")


_DURATION_UNITS = MappingProxyType(
    {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}
)


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")


_SIZE_UNITS = MappingProxyType(
    {
        None: 1,
        "B": 1,
        "KB": 1000,
        "MB": 1000**2,
        "GB": 1000**3,
        "KiB": 1024,
        "MiB": 1024**2,
        "GiB": 1024**3,
    }
)


class ConfigErrors(ConfigError):
    """Several problems in one config; ``errors`` lists each, the message joins them."""

    def __init__(self, errors: list[ConfigError]) -> None:
        ValueError.__init__(self, "; ".join(str(error) for error in errors))
        self.path = errors[0].path
        self.errors = errors


def raise_errors(errors: list[ConfigError]) -> None:
    """Raise the one error, or all of them as ConfigErrors; nothing when the list is empty."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    bounds = _bounds_text(minimum, maximum)

    def parse(value: Any, path: str) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if (
            not ok
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
        ):
            raise ConfigError(path, f"must be an integer{bounds}, got {shown(value)}")
        return int(value)

    return parse


def _bounds_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def parse_duration(text: str) -> float:
    """``500ms``, ``10s``, ``1m``, ``1h``, ``1d``, ``2w``, ``2y`` -> seconds. Raises ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration(minimum: float = 0.0, maximum: float | None = None) -> Parser:
    """A duration string, or a bare number of seconds."""

    def parse(value: Any, path: str) -> float:
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError:
                seconds = None
        if seconds is None:
            raise ConfigError(
                path, f"must be a duration like 500ms, 10s, 1m, 1h or 1d, got {shown(value)}"
            )
        if seconds < minimum or (maximum is not None and seconds > maximum):
            raise ConfigError(
                path,
                f"must be a duration{_bounds_text(minimum, maximum)} seconds, got {shown(value)}",
            )
        return seconds

    return parse


def byte_size(minimum: int = 1) -> Parser:
    """An integer number of bytes, or ``64KiB`` / ``1MiB`` / ``1MB``."""

    def parse(value: Any, path: str) -> int:
        size: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str) and (match := _SIZE.match(value)):
            size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if size is None or size < minimum:
            expected = f"must be a size in bytes >= {minimum} (e.g. 65536 or 64KiB)"
            raise ConfigError(path, f"{expected}, got {shown(value)}")
        return size

    return parse


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {shown(value)}")
    return value


def choice(*options: str) -> Parser:
    def parse(value: Any, path: str) -> str:
        if value not in options:
            raise ConfigError(path, f"must be one of {', '.join(options)}, got {shown(value)}")
        return str(value)

    return parse


def text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"must be a non-empty string, got {shown(value)}")
    return value


def number(minimum: float | None = None) -> Parser:
    def parse(value: Any, path: str) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (minimum is not None and value < minimum):
            raise ConfigError(
                path, f"must be a number{_bounds_text(minimum, None)}, got {shown(value)}"
            )
        return float(value)

    return parse


def network(value: Any, path: str) -> str:
    """An IP address or CIDR network, e.g. 10.0.0.0/8 or ::1."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            pass
    raise ConfigError(path, f"must be an IP address or network like 10.0.0.0/8, got {shown(value)}")


def optional(parse: Parser) -> Parser:
    """``null`` keeps the built-in choice (documented per key); anything else is parsed."""

    def parse_optional(value: Any, path: str) -> Any:
        return None if value is None else parse(value, path)

    return parse_optional


def mapping_list(
    value: Any, path: str, keys: tuple[str, ...], required: tuple[str, ...]
) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, item) of a list of mappings with only ``keys``, each with ``required``."""
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of {{{', '.join(keys)}}}, got {shown(value)}")
    entries = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, f"must be a mapping with {', '.join(keys)}, got {shown(item)}")
        unknown = set(item) - set(keys)
        if unknown:
            raise ConfigError(
                f"{where}.{sorted(unknown)[0]}", f"unknown key (expected {', '.join(keys)})"
            )
        for key in required:
            if key not in item:
                raise ConfigError(f"{where}.{key}", "is required")
        entries.append((where, item))
    return entries


def string_list(item: Parser = text, *, allow_empty: bool = True) -> Parser:
    def parse(value: Any, path: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or (not value and not allow_empty):
            kind = "list of strings" if allow_empty else "non-empty list of strings"
            raise ConfigError(path, f"must be a {kind}, got {shown(value)}")
        return tuple(item(element, f"{path}[{index}]") for index, element in enumerate(value))

    return parse

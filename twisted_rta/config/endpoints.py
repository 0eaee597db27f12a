"""Listen endpoint strings: checked at config time, given the configured backlog at bind time.

Twisted's parser (``serverFromString``) builds an endpoint object without binding, so it
catches unknown types and arguments early; it leaves port ranges to ``bind()``, so the
port of the TCP-like types is checked here.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString

from twisted_rta.config.parsers import ConfigError, text
from twisted_rta.escapes import split_unescaped

# Types whose first positional argument (or port=) is a TCP port and that take backlog=.
TCP_LIKE = frozenset({"tcp", "tcp6", "ssl", "reuseport"})
# systemd:...:name=http looks its socket up in the environment while parsing: outside
# systemd that fails, so only the listener checks it, at bind time.
_CHECKED_AT_BIND = frozenset({"systemd"})
_EXAMPLE = "tcp:8080:interface=127.0.0.1"


def _fields(description: str) -> list[str]:
    """The ``:``-separated fields, honouring ``\\:`` escapes (kept as written)."""
    return split_unescaped(description, ":")


def endpoint_type(description: str) -> str:
    return _fields(description)[0].strip().lower()


def _port(fields: list[str]) -> str | None:
    for field in fields[1:]:
        if field.startswith("port="):
            return field.partition("=")[2]
    positional = [field for field in fields[1:] if "=" not in field]
    return positional[0] if positional else None


def check_endpoint(value: Any, path: str) -> str:
    """A config parser: a listen endpoint string Twisted can build, with a valid port."""
    description = text(value, path)
    fields = _fields(description)
    kind = endpoint_type(description)
    if len(fields) < 2:
        raise ConfigError(path, f"must be a Twisted endpoint like {_EXAMPLE}, got {value!r}")
    if kind not in _CHECKED_AT_BIND:
        try:
            serverFromString(object(), description)
        except Exception as error:  # each parser raises what it likes (ValueError, TypeError..)
            detail = str(error) or type(error).__name__
            raise ConfigError(path, f"invalid endpoint {description!r}: {detail}") from None
    if kind in TCP_LIKE:
        port = _port(fields)
        if port is None or not port.strip().isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(
                path, f"port must be a number from 0 to 65535 in {description!r}, got {port!r}"
            )
    return description


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``backlog=`` added for the TCP-like types that do not set one."""
    fields = _fields(description)
    if endpoint_type(description) not in TCP_LIKE:
        return description
    if any(field.startswith("backlog=") for field in fields[1:]):
        return description
    return f"{description}:backlog={backlog}"

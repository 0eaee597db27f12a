"""The effective config as YAML in our own vocabulary (``twistd rta --print-config``).

Derived from the schema alone, as ``summary`` and ``reloadable`` are: every key of every
section, so a new key is printed without a change here. Each value is written in the most
readable form that its key's own parser takes back to the same value (a duration as ``30s``
or ``2d``, a byte size as ``64KiB``, a metric rule as it is written), falling back to the
plain value; a value with no such form is a bug and raises. Feeding the text back with
``-c`` gives an equal Config, except a redacted password.

Secrets: API keys are printed as their SHA-256 digests (``sha256:``, which is all the
Config holds); a password in ``store.url`` is replaced by ``REDACTED``, with a comment
saying to fill it in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import yaml

from twisted_rta.config.parsers import ConfigError, Parser, parse_duration

REDACTED = "REDACTED"

# Largest first: a value takes the largest unit that writes it as a whole number.
_DURATION_UNITS = (
    ("y", 365 * 86400.0),
    ("w", 7 * 86400.0),
    ("d", 86400.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
_SIZE_UNITS = (
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1000**3),
    ("MB", 1000**2),
    ("KB", 1000),
)


def duration_text(seconds: float) -> str | None:
    """``seconds`` as a duration the config takes, with the largest unit that writes it
    as a whole number (``90s``, ``5m``, ``2d``, ``200ms``), else in seconds (``0.0005s``);
    None when no such text gives back exactly that number."""
    if seconds == 0:
        return "0s"
    candidates = [f"{round(seconds / size)}{unit}" for unit, size in _DURATION_UNITS]
    for candidate in [*candidates, f"{seconds!r}s"]:
        try:
            if parse_duration(candidate) == seconds:
                return candidate
        except ValueError:  # negative, or an exponent (1e-05s): not a duration
            continue
    return None


def size_text(size: int) -> str | None:
    """``size`` bytes with the largest unit that divides it (``64KiB``, ``1MB``), or None."""
    for unit, factor in _SIZE_UNITS:
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return None


def _forms(value: Any) -> Iterator[Any]:
    """Ways to write ``value``, most readable first; the key's parser picks."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        yield value
    elif isinstance(value, int):
        text = size_text(value)
        if text is not None:
            yield text
        yield value
    elif isinstance(value, float):
        text = duration_text(value)
        if text is not None:
            yield text
        if value.is_integer():
            yield int(value)  # 1000, not 1000.0, for a rate
        yield value
    else:  # a list (of strings, of attrs values, of metric rules...) or an attrs value
        yield _plain(value, readable=True)
        yield _plain(value, readable=False)


def _plain(item: Any, *, readable: bool) -> Any:
    """``item`` as plain data: a metric rule as it is written, an attrs value as a mapping
    of its fields (None ones left out: absent is how the config says none), a tuple as a
    list, a number of seconds inside them as a duration when ``readable``."""
    as_config = getattr(item, "as_config", None)
    if as_config is not None:
        return as_config()
    if attrs.has(type(item)):
        return {
            spec.name: _plain(getattr(item, spec.name), readable=readable)
            for spec in attrs.fields(type(item))
            if getattr(item, spec.name) is not None
        }
    if isinstance(item, tuple):
        return [_plain(element, readable=readable) for element in item]
    if readable and isinstance(item, float):
        text = duration_text(item)
        return item if text is None else text
    return item


def printed_value(value: Any, parse: Parser, path: str) -> Any:
    """The first of ``value``'s forms that ``parse`` takes back to an equal value."""
    for form in _forms(value):
        try:
            if parse(form, path) == value:
                return form
        except ConfigError:
            continue
    raise ValueError(f"{path}: no printed form of {value!r} parses back to it")


def _redact_url(url: str) -> str:
    """``store.url`` with its password (in ``user:password@`` or a ``password=``
    parameter, URL or libpq key=value form) replaced by REDACTED."""
    # Up to the last @ of the authority, as urlsplit reads it.
    url = re.sub(r"(?i)^([a-z][a-z0-9+.-]*://[^:/@?#]*):[^/?#]*@", rf"\1:{REDACTED}@", url)
    return re.sub(
        r"(^|[?&\s])(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", rf"\1\2{REDACTED}", url
    )


#: Keys whose printed value hides a secret, and the comment said about it when it did.
_SECRETS: Mapping[str, tuple[Callable[[Any], Any], str]] = MappingProxyType(
    {
        "store.url": (
            lambda url: url if url is None else _redact_url(url),
            f"store.url: the password is replaced by {REDACTED}: fill it in before using this file",
        ),
    }
)


def config_mapping(config: Any, *, redact: bool = True) -> dict[str, Any]:
    """``config`` (a Config or one of its sections) as a plain nested mapping in the
    config's own vocabulary, each value in a form its key's parser takes back."""
    return _mapping(config, "", redact, [])


def _mapping(config: Any, prefix: str, redact: bool, redacted: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in attrs.fields(type(config)):
        value = getattr(config, spec.name)
        key = f"{prefix}{spec.name}"
        if "section" in spec.metadata:
            out[spec.name] = _mapping(value, key + ".", redact, redacted)
            continue
        printed = printed_value(value, spec.metadata["parse"], key)
        if redact and key in _SECRETS:
            hidden = _SECRETS[key][0](printed)
            if hidden != printed:
                redacted.append(key)
            printed = hidden
        out[spec.name] = printed
    return out


def config_yaml(config: Any, *, notices: tuple[str, ...] = (), source: str | None = None) -> str:
    """The YAML text of ``twistd rta --print-config``: a header, ``notices`` (the keys of
    the file that had no effect) as comments, then each section, secrets redacted."""
    redacted: list[str] = []
    mapping = _mapping(config, "", True, redacted)
    lines = [
        "# The effective twisted-rta config"
        + (f" of {source}" if source else "")
        + ", in twisted-rta's own vocabulary.",
        "# Feed it back with: twistd rta -c FILE",
    ]
    if notices:
        lines.append("# Not carried over (no effect):")
        lines += [f"#   {notice}" for notice in notices]
    for name, section_mapping in mapping.items():
        lines.append("")
        lines += [f"# {_note(key)}" for key in redacted if key.split(".")[0] == name]
        lines.append(_dump({name: section_mapping}).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _note(key: str) -> str:
    return _SECRETS[key][1]


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes a list of plain values on one line (``[count, sum]``)."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    scalars = all(isinstance(item, str | int | float | bool) or item is None for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=scalars)


_Dumper.add_representer(list, _represent_list)


def _dump(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,
    )

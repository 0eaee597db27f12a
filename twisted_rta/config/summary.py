"""The effective config as a flat, redacted mapping (start-up log, reload diffs)."""

from __future__ import annotations

import re
from typing import Any

import attrs


def summary(config: Any, prefix: str = "", *, redact: bool = True) -> dict[str, Any]:
    """The effective config as a flat ``section.key`` mapping, secrets redacted unless
    ``redact=False`` (startup log; reload diffs compare unredacted values, never log them)."""
    flat: dict[str, Any] = {}
    for value_field in attrs.fields(type(config)):
        value = getattr(config, value_field.name)
        key = f"{prefix}{value_field.name}"
        if "section" in value_field.metadata:
            flat.update(summary(value, key + ".", redact=redact))
            continue
        if isinstance(value, tuple):
            value = [_plain(item) for item in value]
        flat[key] = _redact(key, value) if redact else value
    return flat


def _plain(item: Any) -> Any:
    """A tuple item as plain data: a metric rule as it is written in YAML."""
    as_config = getattr(item, "as_config", None)
    if as_config is not None:
        return as_config()
    return attrs.asdict(item) if attrs.has(type(item)) else item


def _redact(key: str, value: Any) -> Any:
    """Hide a database password and API key digests before they reach the log."""
    if key == "store.url" and isinstance(value, str):
        return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", value)
    if key == "auth.keys":
        return [
            {"name": item["name"], "scopes": item["scopes"]}
            | ({} if item["sites"] is None else {"sites": item["sites"]})
            for item in value
        ]
    return value

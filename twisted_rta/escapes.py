"""Splitting text on a separator that a backslash escapes (endpoint strings, series keys)."""

from __future__ import annotations


def split_unescaped(text: str, separator: str) -> list[str]:
    """The parts of ``text`` between unescaped ``separator``s, escapes kept as written
    (``a\\:b:c`` on ``:`` is ``["a\\:b", "c"]``)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts

"""Reading members of an SDK's JSON object (Segment's, PostHog's): text, a URL's path, an
instant, and the error for a missing or mistyped text member. Shared by the decoders of
events/segment.py and events/posthog.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from twisted_rta.events.model import EventError
from twisted_rta.events.rules import describe, parse_rfc3339


def instant(raw: Any, key: str, index: int) -> float | EventError:
    """An RFC 3339 member as POSIX seconds, or the event's error naming ``key``."""
    seconds = parse_rfc3339(raw) if type(raw) is str else None
    if seconds is None:
        return EventError(
            index,
            key,
            "invalid_timestamp",
            f'{key} must be an ISO 8601 date-time with an offset (e.g. "2026-01-02T03:04:05Z"); '
            f"got {describe(raw)}",
        )
    return seconds


def text_of(obj: dict[str, Any], key: str) -> str | None:
    """A member that is non-blank text, else None (another shape is ignored, not stored)."""
    value = obj.get(key)
    return value if type(value) is str and value.strip() else None


def path_of(url: str | None) -> str | None:
    """The page of a URL (``page_of`` its path), or None when it is no URL."""
    if url is None:
        return None
    try:
        return page_of(urlsplit(url).path)
    except ValueError:  # e.g. an unclosed IPv6 bracket: no path to take
        return None


def page_of(path: str | None) -> str | None:
    """A path as the ``page`` property has it, whichever source sent it: percent-decoded,
    without trailing whitespace, "/" when empty (as events/plausible.py has it, so one
    page is one series whether a tracker or an SDK reported it)."""
    if path is None:
        return None
    return unquote(path).rstrip() or "/"


def text_error(index: int, field: str, value: Any, what: str) -> EventError:
    if value is None:
        return EventError(index, field, "missing_field", f"{field} is required: {what}")
    if type(value) is str:
        return EventError(index, field, "empty_field", f"{field} must not be empty or blank")
    return EventError(
        index, field, "invalid_type", f"{field} must be a string ({what}); got {describe(value)}"
    )

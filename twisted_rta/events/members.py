"""What the SDK decoders (events/segment.py, events/posthog.py) share: reading members of
an SDK's JSON object (the event's name, its id, its subject, text, a URL's path, an instant,
with errors naming the member as sent), and judging a batch's messages one by one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted_rta.events.model import BatchResult, Event, EventError
from twisted_rta.events.rules import (
    MAX_ID_LENGTH,
    MAX_SUBJECT_LENGTH,
    MAX_TYPE_LENGTH,
    describe,
    parse_rfc3339,
)


def judge_each(
    messages: Sequence[Any],
    oversized: Mapping[int, int],
    limit: int,
    noun: str,
    judge: Callable[[Any, int], Event | EventError],
) -> BatchResult:
    """Each message judged on its own (a single call is a batch of one, index 0); one over
    ``limit`` bytes (``oversized``: index -> size) is ``event_too_large``."""
    events: list[Event] = []
    errors: list[EventError] = []
    for index, message in enumerate(messages):
        if index in oversized:
            result: Event | EventError = EventError(
                index,
                "",
                "event_too_large",
                f"{noun} must be at most {limit} bytes; got {oversized[index]} bytes",
            )
        else:
            result = judge(message, index)
        if type(result) is EventError:
            errors.append(result)
        else:
            events.append(result)  # type: ignore[arg-type]  # not an EventError: an Event
    return BatchResult(tuple(events), tuple(errors), len(messages))


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


def event_name(value: Any, key: str, index: int, what: str) -> str | EventError:
    """The event's name member, stripped: non-blank text of at most MAX_TYPE_LENGTH."""
    if type(value) is not str or not value.strip():
        return text_error(index, key, value, what)
    name = value.strip()
    if len(name) > MAX_TYPE_LENGTH:
        return EventError(
            index,
            key,
            "too_long",
            f"{key} may be at most {MAX_TYPE_LENGTH} characters; got {len(name)}",
        )
    return name


def id_error(value: Any, key: str, index: int) -> EventError | None:
    """The error of an id member that is neither absent nor text of at most MAX_ID_LENGTH."""
    if value is None or (type(value) is str and len(value) <= MAX_ID_LENGTH):
        return None
    return EventError(
        index,
        key,
        "invalid_type" if type(value) is not str else "too_long",
        f"{key} must be a string of at most {MAX_ID_LENGTH} characters; got {describe(value)}",
    )


def first_subject(
    candidates: Iterable[tuple[str, Any]], index: int
) -> tuple[str, str] | EventError | None:
    """(the member it came from, the subject) of the first candidate given (a number is
    taken as its digits; "" is absent), its error, or None when none is given."""
    for key, value in candidates:
        if type(value) is int:
            value = str(value)
        if value is None or value == "":
            continue
        if type(value) is not str or len(value) > MAX_SUBJECT_LENGTH:
            return EventError(
                index,
                key,
                "invalid_type" if type(value) is not str else "too_long",
                f"{key} must be a string of at most {MAX_SUBJECT_LENGTH} characters; "
                f"got {describe(value)}",
            )
        return key, value
    return None

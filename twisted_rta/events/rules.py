"""The rules every event is judged by: fixed limits, the per-request ``Rules`` and the field
checks, each defined once here for both decode paths (careful and fast).

``validate`` applies them in a fixed order to a decoded JSON object; the first broken rule
is the event's error, worded for the client.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from attrs import frozen

from twisted_rta.events.model import Event, EventError, EventLimits

MAX_TYPE_LENGTH = 128
MAX_ID_LENGTH = 128
MAX_SUBJECT_LENGTH = 256  # user_id and session_id
_SHOWN_KEY_LENGTH = 40  # property keys are cut to this in error fields and messages
_SHOWN_NUMBER_LENGTH = 24  # numbers are cut to this in messages

# Purchases: their amount feeds the revenue counter, which must never decrease.
PURCHASE_TYPE = "purchase"
AMOUNT_PROPERTY = "amount"
_AMOUNT_FIELD = f"properties.{AMOUNT_PROPERTY}"

# A numeric timestamp in this range was most likely sent in epoch seconds: as seconds it is
# 2001..5138, as milliseconds (what it is read as) early 1970..1973.
_SECONDS_LIKE_FROM, _SECONDS_LIKE_TO = 1e9, 1e11

# RFC 3339 date-time: an explicit offset is required, fractions may have any length.
RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


@frozen(slots=True)
class Rules:
    """The limits of one request, with the accepted timestamp range worked out once."""

    now: float
    oldest: float
    newest: float
    max_age: float
    max_skew: float
    max_properties: int
    max_depth: int
    max_key_length: int
    max_string_length: int
    new_id: Callable[[], str]

    @classmethod
    def build(cls, now: float, limits: EventLimits, new_id: Callable[[], str]) -> Rules:
        return cls(
            now,
            now - limits.max_event_age,
            now + limits.max_future_skew,
            limits.max_event_age,
            limits.max_future_skew,
            limits.max_properties,
            limits.max_property_depth,
            limits.max_property_key_length,
            limits.max_string_length,
            new_id,
        )


def validate(
    obj: dict[str, Any], index: int | None, rules: Rules, unicode_suspect: bool
) -> Event | EventError:
    """Apply the field rules in a fixed order; the first broken rule is the event's error.

    ``unicode_suspect`` says the object's text may hold a lone surrogate escape; only then
    are its strings checked for one. An id is drawn from ``rules.new_id`` only for an event
    that breaks no other rule.
    """
    type_ = obj.get("type")
    if type(type_) is not str:
        if "type" not in obj:
            return EventError(
                index,
                "type",
                "missing_field",
                f"type is required: a non-empty string of at most {MAX_TYPE_LENGTH} characters",
            )
        return EventError(
            index,
            "type",
            "invalid_type",
            f"type must be a non-empty string of at most {MAX_TYPE_LENGTH} characters; "
            f"got {describe(type_)}",
        )
    type_ = type_.strip()
    if not type_ or len(type_) > MAX_TYPE_LENGTH:
        return EventError(
            index,
            "type",
            "too_long" if type_ else "empty_field",
            f"type must be a non-empty string of at most {MAX_TYPE_LENGTH} characters; "
            f"got {describe_string(type_) if type_ else 'an empty or whitespace-only string'}",
        )

    event_id = obj.get("id")
    if event_id is not None and (type(event_id) is not str or len(event_id) > MAX_ID_LENGTH):
        return EventError(
            index,
            "id",
            "invalid_type" if type(event_id) is not str else "too_long",
            f"id must be a string of at most {MAX_ID_LENGTH} characters, or absent; "
            f"got {describe(event_id)}",
        )

    raw_timestamp = obj.get("timestamp")
    if raw_timestamp is None:
        timestamp = rules.now
    else:
        timestamp_or_error = event_timestamp(raw_timestamp, index, rules)
        if type(timestamp_or_error) is EventError:
            return timestamp_or_error
        timestamp = timestamp_or_error  # type: ignore[assignment]  # narrowed by the type() check

    user_id = obj.get("user_id")
    if user_id is not None and (type(user_id) is not str or len(user_id) > MAX_SUBJECT_LENGTH):
        return _subject_error(index, "user_id", user_id)
    session_id = obj.get("session_id")
    if session_id is not None and (
        type(session_id) is not str or len(session_id) > MAX_SUBJECT_LENGTH
    ):
        return _subject_error(index, "session_id", session_id)

    properties = obj.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        return properties_type_error(index, properties)
    elif properties:
        problem = _properties_problem(properties, index, rules)
        if problem is not None:
            return problem
        if type_ == PURCHASE_TYPE:
            wrong = amount_problem(properties.get(AMOUNT_PROPERTY))
            if wrong is not None:
                return amount_error(index, wrong)

    # "" means absent for the optional strings; ids are generated only for valid events.
    event = Event(
        event_id or rules.new_id(),
        type_,
        timestamp,
        user_id or None,
        session_id or None,
        properties,
        bool(event_id),
    )
    if unicode_suspect:
        where = _unpaired_surrogate(event)
        if where is not None:
            return EventError(
                index,
                where,
                "invalid_unicode",
                f"{where} contains an unpaired UTF-16 surrogate escape; "
                "strings must be valid Unicode",
            )
    return event


def properties_type_error(index: int | None, properties: Any) -> EventError:
    """The error of a ``properties`` member that is neither an object nor null."""
    return EventError(
        index,
        "properties",
        "invalid_type",
        f"properties must be a JSON object or null; got {describe(properties)}",
    )


def not_an_object(index: int, item: Any) -> EventError:
    """The error for a batch element that is not a JSON object."""
    return EventError(
        index,
        "",
        "invalid_type",
        f"each batch element must be a JSON object; got {describe(item)}",
    )


def _subject_error(index: int | None, name: str, value: Any) -> EventError:
    return EventError(
        index,
        name,
        "invalid_type" if type(value) is not str else "too_long",
        f"{name} must be a string of at most {MAX_SUBJECT_LENGTH} characters, or null; "
        f"got {describe(value)}",
    )


# ---------------------------------------------------------------------------------------------
# Timestamps


def event_timestamp(value: Any, index: int | None, rules: Rules) -> float | EventError:
    """A (non-null) timestamp as POSIX seconds within the accepted range, or its error."""
    kind = type(value)
    if kind is str:
        seconds = parse_rfc3339(value)
        if seconds is None:
            return _bad_timestamp(index, f"got {quote(value)}")
    elif kind is int or kind is float:
        if kind is float and not math.isfinite(value):
            return _bad_timestamp(index, "got a number too large for a float")
        try:
            seconds = value / 1000
        except OverflowError:  # an integer beyond float range: far outside any window anyway
            seconds = math.inf if value > 0 else -math.inf
    else:
        return _bad_timestamp(index, f"got {describe(value)}")
    return timestamp_in_range(seconds, index, rules, None if kind is str else value)


def timestamp_in_range(
    seconds: float,
    index: int | None,
    rules: Rules,
    number: float | None = None,
    field: str = "timestamp",
) -> float | EventError:
    """``seconds`` when within the accepted range, else its error (``number``: the numeric
    timestamp it was read from, for the epoch-seconds hint). Other formats (Segment's, with
    the clock offset applied) reuse it, so every way in gets the same range and wording."""
    if seconds > rules.newest:
        return EventError(
            index,
            field,
            "timestamp_in_future",
            f"timestamp may be at most {rules.max_skew:g} seconds ahead of the server clock; "
            f"got {seconds - rules.now:.3f} seconds ahead",
        )
    if seconds < rules.oldest:
        hint = ""
        if number is not None:
            hint = "; numeric timestamps are epoch milliseconds"
            if _SECONDS_LIKE_FROM <= number < _SECONDS_LIKE_TO:
                hint += f" (got {number_text(number)}, which looks like epoch seconds)"
        return EventError(
            index,
            field,
            "timestamp_too_old",
            f"timestamp may be at most {rules.max_age:g} seconds old; "
            f"got {rules.now - seconds:.3f} seconds old{hint}",
        )
    return seconds


def _bad_timestamp(index: int | None, got: str) -> EventError:
    return EventError(
        index,
        "timestamp",
        "invalid_timestamp",
        "timestamp must be an RFC 3339 date-time with an offset "
        '(e.g. "2026-01-02T03:04:05Z" or "2026-01-02T08:04:05+05:00") '
        f"or epoch milliseconds as a number; {got}",
    )


def parse_rfc3339(text: str) -> float | None:
    """RFC 3339 with a required offset -> POSIX seconds; digits past microseconds are cut."""
    if RFC3339.fullmatch(text) is None:
        return None
    # The regex pins the shape; fromisoformat (C, truncates long fractions) checks the ranges.
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        if not ("t" in text or "z" in text):  # fromisoformat wants the upper-case letters
            return None
        try:
            moment = datetime.fromisoformat(text.upper())
        except ValueError:
            return None
    return moment.timestamp()


# ---------------------------------------------------------------------------------------------
# Properties


def limits_breach(
    container: dict[str, Any] | list[Any], level: int, rules: Rules
) -> tuple[str, Any, list[Any]] | None:
    """The first (code, culprit, innermost-first path) breaking a properties limit inside
    ``container``, or None when it keeps them all.

    ``level`` is how deep ``container`` sits: properties itself is level 0, and only it has
    a key count limit. The fast path calls this on properties as they are, so it stays one
    loop over the members.
    """
    pairs: Iterable[tuple[Any, Any]]
    key: Any  # a str in an object, an int in an array
    if type(container) is dict:
        if level == 0 and len(container) > rules.max_properties:
            return ("too_many_properties", container, [])
        is_dict = True
        pairs = container.items()
    else:
        is_dict = False
        pairs = enumerate(container)
    max_key = rules.max_key_length
    max_string = rules.max_string_length
    for key, value in pairs:
        if is_dict and len(key) > max_key:
            return ("key_too_long", key, [key])
        kind = type(value)
        if kind is str:
            if len(value) > max_string:
                return ("too_long", value, [key])
        elif kind is dict or kind is list:
            if level >= rules.max_depth:
                return ("too_deep", value, [key])
            found = limits_breach(value, level + 1, rules)
            if found is not None:
                found[2].append(key)
                return found
        elif kind is float and not math.isfinite(value):
            return ("invalid_number", value, [key])
    return None


def _properties_problem(
    properties: dict[str, Any], index: int | None, rules: Rules
) -> EventError | None:
    found = limits_breach(properties, 0, rules)
    if found is None:
        return None
    code, culprit, path = found
    path.reverse()
    field = _path(path)
    if code == "too_many_properties":
        message = f"properties may have at most {rules.max_properties} keys; got {len(culprit)}"
    elif code == "key_too_long":
        message = (
            f"property keys may be at most {rules.max_key_length} characters; "
            f"got one of {len(culprit)}"
        )
        code = "too_long"
    elif code == "too_long":
        message = (
            f"strings in properties may be at most {rules.max_string_length} characters; "
            f"{field} has {len(culprit)}"
        )
    elif code == "too_deep":
        message = (
            f"properties may nest objects and arrays at most {rules.max_depth} levels deep; "
            f"{field} is {describe(culprit)} one level deeper"
        )
    else:
        message = f"numbers in properties must be finite; {field} is too large for a float"
    return EventError(index, field, code, message)


def amount_problem(amount: Any) -> str | None:
    """What is wrong with a purchase's ``properties.amount``, or None when it is fine.

    Absent or null is fine (a purchase without revenue); otherwise it must be a finite JSON
    number >= 0: not a bool, not a numeric string, not an integer beyond float range.
    """
    kind = type(amount)
    if kind is float:
        if amount >= 0 and amount != math.inf:  # NaN fails the comparison
            return None
        if not math.isfinite(amount):
            return "got a number that is not finite"
    elif kind is int:
        if amount >= 0:
            try:
                float(amount)
            except OverflowError:
                return "got a number too large for a float"
            return None
    elif amount is None:
        return None
    elif kind is str:
        return f"got the string {quote(amount)}, not a number"
    else:
        return f"got {describe(amount)}"
    return f"got a negative number ({number_text(amount)})"


def amount_error(index: int | None, problem: str) -> EventError:
    return EventError(
        index,
        _AMOUNT_FIELD,
        "invalid_amount",
        f"{_AMOUNT_FIELD} of a {PURCHASE_TYPE} event must be a finite number >= 0, or absent; "
        f"{problem}",
    )


def _path(segments: list[Any]) -> str:
    parts = ["properties"]
    for segment in segments:
        parts.append(f"[{segment}]" if type(segment) is int else f".{_short_key(segment)}")
    return "".join(parts)


def _short_key(key: str) -> str:
    return key if len(key) <= _SHOWN_KEY_LENGTH else key[:_SHOWN_KEY_LENGTH] + "..."


# ---------------------------------------------------------------------------------------------
# Unicode


def _unpaired_surrogate(event: Event) -> str | None:
    """The field holding a lone surrogate (unencodable as UTF-8), or None."""
    for name in ("id", "type", "user_id", "session_id"):
        value = getattr(event, name)
        if value is not None and not _encodable(value):
            return name
    return _surrogate_in(event.properties, [])


def _surrogate_in(value: Any, path: list[Any]) -> str | None:
    if type(value) is str:
        return None if _encodable(value) else _path(path)
    if type(value) is dict:
        for key, item in value.items():
            if not _encodable(key):
                return _path([*path, key])
            found = _surrogate_in(item, [*path, key])
            if found is not None:
                return found
    elif type(value) is list:
        for position, item in enumerate(value):
            found = _surrogate_in(item, [*path, position])
            if found is not None:
                return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Wording what a client sent


def describe(value: object) -> str:
    """A JSON-flavoured name for what a client sent, for error messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return describe_string(value)
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__


def describe_string(value: str) -> str:
    if not value:
        return "an empty string"
    return f"a string of {len(value)} characters"


def quote(value: str) -> str:
    shown = value if len(value) <= 64 else value[:64] + "..."
    return json.dumps(shown)


def number_text(value: float) -> str:
    """A JSON number as sent, cut short when it is very long."""
    text = repr(value)
    return text if len(text) <= _SHOWN_NUMBER_LENGTH else text[:_SHOWN_NUMBER_LENGTH] + "..."

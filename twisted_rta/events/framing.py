"""The careful JSON framing of request bodies, on the stdlib scanner: exactly one JSON value,
the body-level checks and errors, and for batches each element's exact span.

It is the reference for every answer and error wording; the msgspec fast path only takes
bodies whose answer it can give identically.
"""

from __future__ import annotations

import json
import re
from typing import Any

from attrs import Factory, define

from twisted_rta.events.model import BodyError, EventLimits
from twisted_rta.events.rules import describe
from twisted_rta.internals import json_scanstring, json_value_scanner

_WHITESPACE_CHARS = " \t\n\r"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A NaN/Infinity literal outside strings: strings are matched first so they are skipped.
_CONSTANT_OUTSIDE_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(-?Infinity|NaN)', re.DOTALL)
# JSON escapes can produce lone UTF-16 surrogates, which no UTF-8 consumer downstream accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _NonFiniteLiteral(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteLiteral(name)


# Configured once and never changed, like json's own module-level default decoder.
_scan_once = json_value_scanner(_reject_constant)
_whitespace_run = _WHITESPACE.match


def _skip_ws(text: str, idx: int) -> int:
    """The index of the first non-whitespace character at or after ``idx``."""
    run = _whitespace_run(text, idx)
    return idx if run is None else run.end()


# ---------------------------------------------------------------------------------------------
# Whole bodies


def frame_event(body: bytes, max_event_bytes: int) -> tuple[dict[str, Any], bool]:
    """The JSON object of a single-event body, and whether its text has a surrogate escape
    (so that a string in it may hold a lone surrogate); every body problem is a BodyError."""
    if not body:
        raise BodyError(400, "empty_body", "the body is empty; expected one JSON event object")
    if len(body) > max_event_bytes:
        raise BodyError(
            413,
            "event_too_large",
            f"an event must be at most {max_event_bytes} bytes; got {len(body)} bytes",
        )
    text = _decode_utf8(body)
    start = _skip_ws(text, 0)
    if start == len(text):
        raise BodyError(400, "empty_body", "the body is blank; expected one JSON event object")
    value, end = parse_value(text, start)
    _expect_end(text, end)
    if type(value) is not dict:
        raise BodyError(
            400, "invalid_body", f"the body must be a JSON object; got {describe(value)}"
        )
    unicode_suspect = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    return value, unicode_suspect


@define
class BatchElements:
    """The elements of a batch body, with what their exact text spans tell about them."""

    max_bytes: int
    ascii: bool  # whole body: then character spans are byte spans
    has_escapes: bool  # whole body has "\\u" escapes: lone surrogates are possible
    items: list[Any] = Factory(list)
    oversized: dict[int, int] = Factory(dict)  # index -> size in bytes
    unicode_suspects: set[int] = Factory(set)  # indexes whose text has a surrogate escape

    @classmethod
    def of(cls, text: str, max_bytes: int) -> BatchElements:
        return cls(max_bytes, text.isascii(), "\\u" in text)


def frame_batch(body: bytes, limits: EventLimits) -> BatchElements:
    """The elements of a batch body: a JSON array of events, or an object whose ``events``
    key holds one. Every body problem is a BodyError; elements are not judged here."""
    if not body:
        raise BodyError(400, "empty_body", "the body is empty; expected a JSON array of events")
    if len(body) > limits.max_body_bytes:
        raise BodyError(
            413,
            "body_too_large",
            f"the body must be at most {limits.max_body_bytes} bytes; got {len(body)} bytes",
        )
    text = _decode_utf8(body)
    start = _skip_ws(text, 0)
    if start == len(text):
        raise BodyError(400, "empty_body", "the body is blank; expected a JSON array of events")
    elements = BatchElements.of(text, limits.max_event_bytes)
    if len(body) <= limits.max_event_bytes:
        # No element can be larger than the whole body, so spans are not needed: one scan of
        # the whole body is much faster than one scan per element.
        value, end = parse_value(text, start)
        _expect_end(text, end)
        found = _events_in(value)
        if type(found) is list and elements.has_escapes and _SURROGATE_ESCAPE.search(text):
            elements.unicode_suspects.update(range(len(found)))
    else:
        found = _parse_batch_body(text, start, elements)
    if found is None:
        raise BodyError(400, "empty_batch", "the batch is null; expected at least one event")
    if type(found) is str:
        raise BodyError(
            400,
            "invalid_body",
            'the body must be a JSON array of events or an object with an "events" array; '
            f"got {found}",
        )
    items: list[Any] = found  # type: ignore[assignment]  # neither None nor str: a list
    if not items:
        raise BodyError(400, "empty_batch", "the batch is empty; expected at least one event")
    check_batch_count(len(items), limits, "events")
    elements.items = items
    return elements


def check_batch_count(count: int, limits: EventLimits, noun: str) -> None:
    """413 ``batch_too_large`` past ``limits.max_batch_events`` (``noun``: what a batch of
    this API holds)."""
    if count > limits.max_batch_events:
        raise BodyError(
            413,
            "batch_too_large",
            f"a batch may hold at most {limits.max_batch_events} {noun}; got {count}",
        )


def batch_member(obj: dict[str, Any], limits: EventLimits, noun: str) -> list[Any]:
    """The ``batch`` array of an SDK's batch object (Segment's, PostHog's), at least one
    and at most ``limits.max_batch_events`` of them; else the body's error."""
    messages = obj.get("batch")
    if messages is None:
        raise BodyError(400, "empty_batch", f'"batch" is missing or null; expected {noun}')
    if type(messages) is not list:
        raise BodyError(
            400,
            "invalid_body",
            f'"batch" must be an array of {noun}; got {describe(messages)}',
        )
    if not messages:
        raise BodyError(400, "empty_batch", f'"batch" is empty; expected {noun}')
    check_batch_count(len(messages), limits, noun)
    return messages


def oversized_members(messages: list[Any], body_bytes: int, limit: int) -> dict[int, int]:
    """index -> size in bytes (as compact JSON) of each of ``messages`` over ``limit``, read
    from a body of ``body_bytes``: none can be over when the body is not."""
    oversized: dict[int, int] = {}
    if body_bytes <= limit:
        return oversized
    for index, message in enumerate(messages):
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: judged later
        if size > limit:
            oversized[index] = size
    return oversized


# ---------------------------------------------------------------------------------------------
# JSON values and spans


def _decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            400, "invalid_json", f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None


def _invalid_json(exc: json.JSONDecodeError) -> BodyError:
    return BodyError(400, "invalid_json", f"the body is not valid JSON: {exc}")


def parse_value(text: str, idx: int) -> tuple[Any, int]:
    """Decode one JSON value at ``idx`` (no leading whitespace): (value, index past it).

    Decodes exactly as ``json.loads`` does (NaN and Infinity refused); every failure is a
    BodyError.
    """
    try:
        return _scan_once(text, idx)
    except (StopIteration, ValueError, RecursionError) as exc:
        raise _scan_failure(exc, text, idx) from None


def _scan_failure(exc: BaseException, text: str, idx: int) -> BodyError:
    """Turn what the scanner raised for the value starting at ``idx`` into a BodyError."""
    if isinstance(exc, StopIteration):
        return _invalid_json(json.JSONDecodeError("Expecting value", text, exc.value))
    if isinstance(exc, json.JSONDecodeError):
        return _invalid_json(exc)
    if isinstance(exc, _NonFiniteLiteral):
        # The scanner does not say where the literal was: find the first one outside strings.
        position = next(
            (m.start(1) for m in _CONSTANT_OUTSIDE_STRING.finditer(text, idx) if m.group(1)),
            idx,
        )
        return _invalid_json(json.JSONDecodeError(f"{exc} is not allowed in JSON", text, position))
    if isinstance(exc, RecursionError):
        return BodyError(400, "too_deep", "the body's JSON is nested too deeply to decode")
    # e.g. an integer literal with more digits than Python converts
    return BodyError(400, "invalid_json", f"the body is not valid JSON: {exc}")


def _expect_end(text: str, idx: int) -> None:
    idx = _skip_ws(text, idx)
    if idx != len(text):
        error = json.JSONDecodeError("Extra data after the JSON value", text, idx)
        raise BodyError(400, "trailing_data", f"the body must hold exactly one JSON value: {error}")


def _events_in(value: Any) -> list[Any] | str | None:
    """The events list of a decoded batch body, None for a null batch, or what was found."""
    if type(value) is list:
        return value
    if type(value) is dict:
        if "events" not in value:
            return 'an object without an "events" key'
        value = value["events"]
        if type(value) is list:
            return value
        return None if value is None else f'"events" holding {describe(value)}'
    return None if value is None else describe(value)


def _parse_batch_body(text: str, idx: int, elements: BatchElements) -> list[Any] | str | None:
    """Like ``_events_in`` on the whole body, but records each element's span in ``elements``."""
    first = text[idx]
    if first == "[":
        end = _parse_array(text, idx, elements)
        _expect_end(text, end)
        return elements.items
    if first != "{":
        value, end = parse_value(text, idx)
        _expect_end(text, end)
        return _events_in(value)

    # An object: walk its members so that the "events" array is parsed element by element.
    found: list[Any] | str | None = 'an object without an "events" key'
    idx = _skip_ws(text, idx + 1)
    if text[idx : idx + 1] == "}":
        _expect_end(text, idx + 1)
        return found
    while True:
        if text[idx : idx + 1] != '"':
            raise _invalid_json(
                json.JSONDecodeError("Expecting property name enclosed in double quotes", text, idx)
            )
        try:
            key, idx = json_scanstring(text, idx + 1, True)
        except json.JSONDecodeError as exc:
            raise _invalid_json(exc) from None
        idx = _skip_ws(text, idx)
        if text[idx : idx + 1] != ":":
            raise _invalid_json(json.JSONDecodeError("Expecting ':' delimiter", text, idx))
        idx = _skip_ws(text, idx + 1)
        if key == "events" and text[idx : idx + 1] == "[":
            elements.items.clear()  # a repeated key: the last one wins, as in json.loads
            elements.oversized.clear()
            elements.unicode_suspects.clear()
            idx = _parse_array(text, idx, elements)
            found = elements.items
        else:
            value, idx = parse_value(text, idx)
            if key == "events":
                found = _events_in({"events": value})  # judged as json.loads would see it
        idx = _skip_ws(text, idx)
        delimiter = text[idx : idx + 1]
        if delimiter == "}":
            _expect_end(text, idx + 1)
            return found
        if delimiter != ",":
            raise _invalid_json(json.JSONDecodeError("Expecting ',' delimiter", text, idx))
        idx = _skip_ws(text, idx + 1)


def _parse_array(text: str, idx: int, elements: BatchElements) -> int:
    """Parse the array at ``text[idx] == "["`` into ``elements``; return the index after it."""
    items = elements.items
    idx = _skip_ws(text, idx + 1)
    if text[idx : idx + 1] == "]":
        return idx + 1
    scan = _scan_once
    max_bytes = elements.max_bytes
    is_ascii = elements.ascii
    has_escapes = elements.has_escapes
    while True:
        start = idx
        try:
            item, idx = scan(text, idx)
        except (StopIteration, ValueError, RecursionError) as exc:
            raise _scan_failure(exc, text, start) from None
        chars = idx - start
        # Bytes >= characters, and UTF-8 needs at most 4 bytes per character: only encode the
        # span when the character count alone cannot decide.
        if chars > max_bytes or (
            not is_ascii
            and chars * 4 > max_bytes
            and len(text[start:idx].encode("utf-8")) > max_bytes
        ):
            size = chars if is_ascii else len(text[start:idx].encode("utf-8"))
            elements.oversized[len(items)] = size
        if has_escapes and _SURROGATE_ESCAPE.search(text, start, idx) is not None:
            elements.unicode_suspects.add(len(items))
        items.append(item)
        delimiter = text[idx : idx + 1]
        if delimiter != "," and delimiter != "]":
            idx = _skip_ws(text, idx)
            delimiter = text[idx : idx + 1]
        if delimiter == ",":
            idx += 1
            # json.dumps puts one space after commas: step over it without the regex.
            if text[idx : idx + 1] == " ":
                idx += 1
            if text[idx : idx + 1] in _WHITESPACE_CHARS:
                idx = _skip_ws(text, idx)
        elif delimiter == "]":
            return idx + 1
        else:
            raise _invalid_json(json.JSONDecodeError("Expecting ',' delimiter", text, idx))

"""The Event value type and the JSON -> Event validation rules (pure, no Twisted)."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import msgspec
from attrs import Factory, define, frozen


@frozen(slots=True)
class Event:
    """One validated, normalised analytics event.

    ``timestamp`` is POSIX seconds (UTC). ``properties`` is the decoded JSON object;
    nobody mutates it after validation.
    """

    id: str
    type: str
    timestamp: float
    user_id: str | None = None
    session_id: str | None = None
    properties: Mapping[str, Any] = {}


class EventLimits(Protocol):
    """The limits the decoder enforces (satisfied by the config's ``LimitsConfig``)."""

    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_batch_events(self) -> int: ...
    @property
    def max_event_bytes(self) -> int: ...
    @property
    def max_properties(self) -> int: ...
    @property
    def max_property_depth(self) -> int: ...
    @property
    def max_property_key_length(self) -> int: ...
    @property
    def max_string_length(self) -> int: ...
    @property
    def max_future_skew(self) -> float: ...
    @property
    def max_event_age(self) -> float: ...


@frozen(slots=True)
class EventError:
    """Why one event was rejected; ``index`` is its position in a batch (None when single)."""

    index: int | None
    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.index is None else {"index": self.index}
        out["code"] = self.code
        out["field"] = self.field
        out["message"] = self.message
        return out


class BodyError(Exception):
    """The request body as a whole is unusable (HTTP ``status`` 400 or 413)."""

    def __init__(
        self, status: int, code: str, message: str, errors: tuple[EventError, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors


class RejectedEvent(Exception):
    """A single-event body was valid JSON but the event broke a field rule (HTTP 400)."""

    status = 400

    def __init__(self, error: EventError) -> None:
        super().__init__(error.message)
        self.error = error


@frozen(slots=True)
class BatchResult:
    """Valid events in arrival order, one error per invalid element, and the element count."""

    events: tuple[Event, ...]
    errors: tuple[EventError, ...]
    total: int


def new_uuid4() -> str:
    """The default id for events sent without one: a random (version 4) UUID.

    Formatted from 16 random bytes directly: ``str(uuid.uuid4())`` costs ~3.2 us, this
    ~1.3 us, and at 100k+ events/s that is a quarter of the decoding time.
    """
    x = os.urandom(16).hex()
    variant = "89ab"[int(x[16], 16) & 3]
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{variant}{x[17:20]}-{x[20:]}"


def id_sequence(prefix: str | None = None) -> Callable[[], str]:
    """A much cheaper ``new_id`` than uuid4 (which costs microseconds per event).

    Ids are ``<prefix>-<counter in hex>``; the default prefix is 64 random bits, so two
    sequences (e.g. two process starts) do not collide in practice.
    """
    start = uuid.uuid4().hex[:16] if prefix is None else prefix
    counter = itertools.count()
    return lambda: f"{start}-{next(counter):x}"


MAX_TYPE_LENGTH = 128
MAX_ID_LENGTH = 128
MAX_SUBJECT_LENGTH = 256  # user_id and session_id
_SHOWN_KEY_LENGTH = 40  # property keys are cut to this in error fields and messages

# RFC 3339 date-time: an explicit offset is required, fractions may have any length.
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
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
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_scan_once: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]
_whitespace_run = _WHITESPACE.match


def _skip_ws(text: str, idx: int) -> int:
    """The index of the first non-whitespace character at or after ``idx``."""
    run = _whitespace_run(text, idx)
    return idx if run is None else run.end()


# ---------------------------------------------------------------------------------------------
# Public entry points


def decode_event(
    body: bytes,
    *,
    now: float,
    limits: EventLimits,
    new_id: Callable[[], str] = new_uuid4,
) -> Event:
    """Decode one event body; raise BodyError (whole body) or RejectedEvent (a field rule)."""
    if not body:
        raise BodyError(400, "empty_body", "the body is empty; expected one JSON event object")
    if len(body) > limits.max_event_bytes:
        raise BodyError(
            413,
            "event_too_large",
            f"an event must be at most {limits.max_event_bytes} bytes; got {len(body)} bytes",
        )
    text = _decode_utf8(body)
    start = _skip_ws(text, 0)
    if start == len(text):
        raise BodyError(400, "empty_body", "the body is blank; expected one JSON event object")
    value, end = _parse_value(text, start)
    _expect_end(text, end)
    if type(value) is not dict:
        raise BodyError(
            400, "invalid_body", f"the body must be a JSON object; got {_describe(value)}"
        )
    unicode_suspect = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    result = _validate(value, None, _Rules.build(now, limits, new_id), unicode_suspect)
    if type(result) is EventError:
        raise RejectedEvent(result)
    return result  # type: ignore[return-value]


def decode_batch(
    body: bytes,
    *,
    now: float,
    limits: EventLimits,
    new_id: Callable[[], str] = new_uuid4,
) -> BatchResult:
    """Decode a batch: a JSON array of events, or an object whose ``events`` key holds one.

    Whole-body problems raise BodyError; each element is then judged on its own, so one bad
    event costs only itself. Error indexes are positions in the array.
    """
    # msgspec takes the common, well-formed bodies; whatever it cannot vouch for is left to the
    # careful parser, which alone words errors. Both give identical results (see the tests).
    if body and len(body) <= limits.max_body_bytes:
        result = _fast_batch(body, now, limits, new_id)
        if result is not None:
            return result
    return _decode_batch_careful(body, now=now, limits=limits, new_id=new_id)


def _decode_batch_careful(
    body: bytes,
    *,
    now: float,
    limits: EventLimits,
    new_id: Callable[[], str] = new_uuid4,
) -> BatchResult:
    """decode_batch with the stdlib scanner only: the reference for every answer and error."""
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
    elements = _Elements.of(text, limits.max_event_bytes)
    if len(body) <= limits.max_event_bytes:
        # No element can be larger than the whole body, so spans are not needed: one scan of
        # the whole body is much faster than one scan per element.
        value, end = _parse_value(text, start)
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
    items: list[Any] = found  # type: ignore[assignment]
    if not items:
        raise BodyError(400, "empty_batch", "the batch is empty; expected at least one event")
    if len(items) > limits.max_batch_events:
        raise BodyError(
            413,
            "batch_too_large",
            f"a batch may hold at most {limits.max_batch_events} events; got {len(items)}",
        )

    rules = _Rules.build(now, limits, new_id)
    events: list[Event] = []
    errors: list[EventError] = []
    oversized = elements.oversized
    suspects = elements.unicode_suspects
    for index, item in enumerate(items):
        if oversized and index in oversized:
            errors.append(
                EventError(
                    index,
                    "",
                    "event_too_large",
                    f"an event must be at most {limits.max_event_bytes} bytes; "
                    f"got {oversized[index]} bytes",
                )
            )
        elif type(item) is not dict:
            errors.append(_not_an_object(index, item))
        else:
            result = _validate(item, index, rules, index in suspects if suspects else False)
            if type(result) is Event:
                events.append(result)
            else:
                errors.append(result)  # type: ignore[arg-type]
    return BatchResult(tuple(events), tuple(errors), len(items))


def _not_an_object(index: int, item: Any) -> EventError:
    return EventError(
        index,
        "",
        "invalid_type",
        f"each batch element must be a JSON object; got {_describe(item)}",
    )


# ---------------------------------------------------------------------------------------------
# The msgspec fast path
#
# msgspec decodes straight into typed Structs, checking types as it goes, faster than json.loads
# alone (DESIGN.md section 6). It is trusted only where its answer equals the stdlib's:
# whatever it fully decodes, json.loads accepts with the same values (it refuses NaN/Infinity,
# 1e999, lone surrogate escapes, the integers json refuses, unknown keys and wrong types). Any
# msgspec error sends the element, or the body, to the careful path, which then decides.


class _JsonEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event object with only known keys and well-typed values (msgspec rejects the rest).

    gc=False: decoded JSON cannot form reference cycles.
    """

    type: str
    id: str | None = None
    # bool is not a number to msgspec; int and float literals keep their kind, as in json.
    timestamp: str | int | float | None = None
    user_id: str | None = None
    session_id: str | None = None
    properties: dict[str, Any] | None = None


class _JsonBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: list[_JsonEvent]


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    events: list[msgspec.Raw]


# Decoders are immutable once built. A Raw element is its exact bytes, for the per-event size.
_TYPED_BATCH = msgspec.json.Decoder(list[_JsonEvent] | _JsonBatch)
_RAW_BATCH = msgspec.json.Decoder(list[msgspec.Raw] | _RawBatch)
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_TYPED_EVENT = msgspec.json.Decoder(_JsonEvent)
_MSGSPEC_ERRORS = (msgspec.DecodeError, ValueError, RecursionError)

# Nesting the fast path accepts: far below the recursion limit, so json.loads (which recurses
# one level per container, from wherever the stack is) cannot raise RecursionError on it.
_SAFE_NESTING = 200
_BULK_IDS_FROM = 16  # below this, one bulk draw of ids costs more than new_uuid4 calls


def _fast_batch(
    body: bytes, now: float, limits: EventLimits, new_id: Callable[[], str]
) -> BatchResult | None:
    """decode_batch's result, or None when only the careful path can give it exactly.

    Returns None before drawing any id, so a caller's ``new_id`` sees the same calls.
    """
    if not body.isascii():
        try:
            body.decode("utf-8")  # msgspec does not check the bytes it skips over for Raw
        except UnicodeDecodeError:
            return None
    if limits.max_property_depth > _SAFE_NESTING:
        return None
    items: list[Any] | None
    try:
        decoded = _TYPED_BATCH.decode(body)
    except _MSGSPEC_ERRORS:
        items = _elements_one_by_one(body, limits.max_event_bytes)
        if items is None:
            return None
    else:
        items = decoded if type(decoded) is list else decoded.events
        # Bodies up to max_event_bytes cannot hold an oversized element: no spans needed.
        if len(body) > limits.max_event_bytes and not _sizes_fit(
            body, len(items), limits.max_event_bytes
        ):
            return None
    if not 0 < len(items) <= limits.max_batch_events:
        return None  # the careful path words these body errors

    # First pass: whatever needs the careful path for the whole body, and how many ids.
    rules = _Rules.build(now, limits, new_id)
    needed = 0
    for item in items:
        if type(item) is _JsonEvent:
            properties = item.properties
            if properties and not _plain_properties(properties, rules):
                # Past the broken limit, nesting may be deep enough for json to give up on the
                # whole body (RecursionError): only the careful path can tell.
                return None
            if not item.id:
                needed += 1
        else:
            needed += 1
    if new_id is new_uuid4 and needed >= _BULK_IDS_FROM:
        rules = _Rules.build(now, limits, _uuid4_supply(needed))

    events: list[Event] = []
    errors: list[EventError] = []
    result: Event | EventError
    for index, item in enumerate(items):
        if type(item) is _JsonEvent:
            result = _judge(item, index, rules)
        else:
            value = item.value
            if type(value) is not dict:
                errors.append(_not_an_object(index, value))
                continue
            # unicode_suspect=True is always exact (it only skips a check when it cannot fail).
            result = _validate(value, index, rules, True)
        if type(result) is Event:
            events.append(result)
        else:
            errors.append(result)  # type: ignore[arg-type]
    return BatchResult(tuple(events), tuple(errors), len(items))


@frozen(slots=True)
class _Parsed:
    """A batch element msgspec refused, as the stdlib scanner decoded it."""

    value: Any


def _sizes_fit(body: bytes, count: int, max_bytes: int) -> bool:
    """Whether no element of a body msgspec decoded is over ``max_bytes`` (as UTF-8)."""
    try:
        decoded = _RAW_BATCH.decode(body)
    except _MSGSPEC_ERRORS:
        return False
    raws = decoded if type(decoded) is list else decoded.events  # the last "events", like json
    return len(raws) == count and all(len(raw) <= max_bytes for raw in raws)


def _elements_one_by_one(body: bytes, max_bytes: int) -> list[_JsonEvent | _Parsed] | None:
    """The elements of a JSON array body, each a _JsonEvent or (when msgspec refuses it) as the
    stdlib scanner decodes it; None for the careful path.

    Only for arrays: in the object form, an earlier "events" key would only be skipped over,
    and msgspec skips values that json rejects (such as an integer of 5000 digits).
    """
    try:
        raws = _RAW_LIST.decode(body)
    except _MSGSPEC_ERRORS:
        return None
    # Refused elements cost more here than in the careful path: give up when they are common
    # (say, a client that always sends an extra key).
    refusals_left = 2 + len(raws) // 16
    items: list[_JsonEvent | _Parsed] = []
    for raw in raws:
        if len(raw) > max_bytes:
            return None
        try:
            items.append(_TYPED_EVENT.decode(raw))
            continue
        except _MSGSPEC_ERRORS:
            refusals_left -= 1
            if refusals_left < 0:
                return None
        data = bytes(raw)
        # Brackets bound the nesting: a deep element might overflow the stack in one scan and
        # not in the other; only the whole-body scan may decide that.
        if data.count(b"[") + data.count(b"{") > _SAFE_NESTING:
            return None
        text = data.decode("utf-8")
        try:
            value, end = _parse_value(text, 0)
        except BodyError:
            return None
        if end != len(text):
            return None
        items.append(_Parsed(value))
    return items


def _plain_properties(properties: dict[str, Any], rules: _Rules) -> bool:
    """Whether ``_properties_problem`` finds nothing (inlined for the common flat case)."""
    if len(properties) > rules.max_properties:
        return False
    max_key = rules.max_key_length
    max_string = rules.max_string_length
    for key, value in properties.items():
        if len(key) > max_key:
            return False
        kind = type(value)
        if kind is str:
            if len(value) > max_string:
                return False
        elif kind is dict or kind is list:
            if rules.max_depth <= 0 or _container_problem(value, 1, rules) is not None:
                return False
        elif kind is float and not math.isfinite(value):
            return False
    return True


def _judge(item: _JsonEvent, index: int, rules: _Rules) -> Event | EventError:
    """``_validate`` for a msgspec-decoded event whose properties are known to be fine."""
    type_ = item.type.strip()
    event_id = item.id
    user_id = item.user_id
    session_id = item.session_id
    raw_timestamp = item.timestamp
    timestamp = rules.now if raw_timestamp is None else _timestamp(raw_timestamp, index, rules)
    if (
        type(timestamp) is EventError
        or not type_
        or len(type_) > MAX_TYPE_LENGTH
        or (event_id is not None and len(event_id) > MAX_ID_LENGTH)
        or (user_id is not None and len(user_id) > MAX_SUBJECT_LENGTH)
        or (session_id is not None and len(session_id) > MAX_SUBJECT_LENGTH)
    ):
        # Some rule is broken: the careful validator names the first one. msgspec refuses
        # lone surrogates, so no string needs the Unicode check.
        return _validate(msgspec.structs.asdict(item), index, rules, False)
    properties = item.properties
    return Event(
        event_id or rules.new_id(),
        type_,
        timestamp,  # type: ignore[arg-type]
        user_id or None,
        session_id or None,
        {} if properties is None else properties,
    )


# Version-4 UUIDs in bulk: set the version nibble and the variant bits of every id at once.
_UUID_VERSION = bytes.maketrans(bytes(range(256)), bytes(b & 0x0F | 0x40 for b in range(256)))
_UUID_VARIANT = bytes.maketrans(bytes(range(256)), bytes(b & 0x3F | 0x80 for b in range(256)))
_UUID_HEX_SLOTS = tuple(p for p in range(36) if p not in (8, 13, 18, 23))


def _uuid4_batch(count: int) -> list[str]:
    """``count`` ids exactly like new_uuid4's, for a fraction of the cost each.

    One urandom call, then every hex digit position is copied for all ids in one slice.
    """
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    digits = raw.hex().encode("ascii")
    out = bytearray(b"-" * 36 + b"\n") * count
    for digit, slot in enumerate(_UUID_HEX_SLOTS):
        out[slot::37] = digits[digit::32]
    return out.decode("ascii").split()


def _uuid4_supply(count: int) -> Callable[[], str]:
    """A new_uuid4 drawing from a bulk batch of ``count`` ids first."""
    return itertools.chain(_uuid4_batch(count), iter(new_uuid4, None)).__next__


# ---------------------------------------------------------------------------------------------
# JSON framing: exactly one value, and each batch element's exact span


def _decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            400, "invalid_json", f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None


def _invalid_json(exc: json.JSONDecodeError) -> BodyError:
    return BodyError(400, "invalid_json", f"the body is not valid JSON: {exc}")


def _parse_value(text: str, idx: int) -> tuple[Any, int]:
    """Decode one JSON value at ``idx`` (no leading whitespace); every failure is a BodyError."""
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


@define
class _Elements:
    """The elements of the events array, with what their exact text spans tell about them."""

    max_bytes: int
    ascii: bool  # whole body: then character spans are byte spans
    has_escapes: bool  # whole body has "\\u" escapes: lone surrogates are possible
    items: list[Any] = Factory(list)
    oversized: dict[int, int] = Factory(dict)  # index -> size in bytes
    unicode_suspects: set[int] = Factory(set)  # indexes whose text has a surrogate escape

    @classmethod
    def of(cls, text: str, max_bytes: int) -> _Elements:
        return cls(max_bytes, text.isascii(), "\\u" in text)


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
        return None if value is None else f'"events" holding {_describe(value)}'
    return None if value is None else _describe(value)


def _parse_batch_body(text: str, idx: int, elements: _Elements) -> list[Any] | str | None:
    """Like ``_events_in`` on the whole body, but records each element's span in ``elements``."""
    first = text[idx]
    if first == "[":
        end = _parse_array(text, idx, elements)
        _expect_end(text, end)
        return elements.items
    if first != "{":
        value, end = _parse_value(text, idx)
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
            key, idx = _scan_string(text, idx + 1, True)
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
            value, idx = _parse_value(text, idx)
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


def _parse_array(text: str, idx: int, elements: _Elements) -> int:
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


# ---------------------------------------------------------------------------------------------
# Field rules


@frozen(slots=True)
class _Rules:
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
    def build(cls, now: float, limits: EventLimits, new_id: Callable[[], str]) -> _Rules:
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


def _validate(
    obj: dict[str, Any], index: int | None, rules: _Rules, unicode_suspect: bool
) -> Event | EventError:
    """Apply the field rules in a fixed order; the first broken rule is the event's error."""
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
            f"got {_describe(type_)}",
        )
    type_ = type_.strip()
    if not type_ or len(type_) > MAX_TYPE_LENGTH:
        return EventError(
            index,
            "type",
            "too_long" if type_ else "empty_field",
            f"type must be a non-empty string of at most {MAX_TYPE_LENGTH} characters; "
            f"got {_describe_string(type_) if type_ else 'an empty or whitespace-only string'}",
        )

    event_id = obj.get("id")
    if event_id is not None and (type(event_id) is not str or len(event_id) > MAX_ID_LENGTH):
        return EventError(
            index,
            "id",
            "invalid_type" if type(event_id) is not str else "too_long",
            f"id must be a string of at most {MAX_ID_LENGTH} characters, or absent; "
            f"got {_describe(event_id)}",
        )

    raw_timestamp = obj.get("timestamp")
    if raw_timestamp is None:
        timestamp = rules.now
    else:
        timestamp_or_error = _timestamp(raw_timestamp, index, rules)
        if type(timestamp_or_error) is EventError:
            return timestamp_or_error
        timestamp = timestamp_or_error  # type: ignore[assignment]

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
        return EventError(
            index,
            "properties",
            "invalid_type",
            f"properties must be a JSON object or null; got {_describe(properties)}",
        )
    elif properties:
        problem = _properties_problem(properties, index, rules)
        if problem is not None:
            return problem

    # "" means absent for the optional strings; ids are generated only for valid events.
    event = Event(
        event_id or rules.new_id(),
        type_,
        timestamp,
        user_id or None,
        session_id or None,
        properties,
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


def _subject_error(index: int | None, name: str, value: Any) -> EventError:
    return EventError(
        index,
        name,
        "invalid_type" if type(value) is not str else "too_long",
        f"{name} must be a string of at most {MAX_SUBJECT_LENGTH} characters, or null; "
        f"got {_describe(value)}",
    )


def _timestamp(value: Any, index: int | None, rules: _Rules) -> float | EventError:
    kind = type(value)
    if kind is str:
        seconds = _parse_rfc3339(value)
        if seconds is None:
            return _bad_timestamp(index, f"got {_quote(value)}")
    elif kind is int or kind is float:
        if kind is float and not math.isfinite(value):
            return _bad_timestamp(index, "got a number too large for a float")
        try:
            seconds = value / 1000
        except OverflowError:  # an integer beyond float range: far outside any window anyway
            seconds = math.inf if value > 0 else -math.inf
    else:
        return _bad_timestamp(index, f"got {_describe(value)}")

    if seconds > rules.newest:
        return EventError(
            index,
            "timestamp",
            "timestamp_in_future",
            f"timestamp may be at most {rules.max_skew:g} seconds ahead of the server clock; "
            f"got {seconds - rules.now:.3f} seconds ahead",
        )
    if seconds < rules.oldest:
        return EventError(
            index,
            "timestamp",
            "timestamp_too_old",
            f"timestamp may be at most {rules.max_age:g} seconds old; "
            f"got {rules.now - seconds:.3f} seconds old",
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


def _parse_rfc3339(text: str) -> float | None:
    """RFC 3339 with a required offset -> POSIX seconds; digits past microseconds are cut."""
    if _RFC3339.fullmatch(text) is None:
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


def _properties_problem(
    properties: dict[str, Any], index: int | None, rules: _Rules
) -> EventError | None:
    if len(properties) > rules.max_properties:
        return EventError(
            index,
            "properties",
            "too_many_properties",
            f"properties may have at most {rules.max_properties} keys; got {len(properties)}",
        )
    found = _container_problem(properties, 0, rules)
    if found is None:
        return None
    code, culprit, path = found
    path.reverse()
    field = _path(path)
    if code == "key_too_long":
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
            f"{field} is {_describe(culprit)} one level deeper"
        )
    else:
        message = f"numbers in properties must be finite; {field} is too large for a float"
    return EventError(index, field, code, message)


def _container_problem(
    container: dict[str, Any] | list[Any], level: int, rules: _Rules
) -> tuple[str, Any, list[Any]] | None:
    """First (code, culprit, innermost-first path) breaking a limit inside ``container``.

    ``level`` is how deep ``container`` sits: properties itself is level 0.
    """
    is_dict = type(container) is dict
    max_key = rules.max_key_length
    max_string = rules.max_string_length
    pairs: Iterable[tuple[Any, Any]] = (
        container.items() if type(container) is dict else enumerate(container)
    )
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
            found = _container_problem(value, level + 1, rules)
            if found is not None:
                found[2].append(key)
                return found
        elif kind is float and not math.isfinite(value):
            return ("invalid_number", value, [key])
    return None


def _path(segments: list[Any]) -> str:
    parts = ["properties"]
    for segment in segments:
        parts.append(f"[{segment}]" if type(segment) is int else f".{_short_key(segment)}")
    return "".join(parts)


def _short_key(key: str) -> str:
    return key if len(key) <= _SHOWN_KEY_LENGTH else key[:_SHOWN_KEY_LENGTH] + "..."


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


def _describe(value: object) -> str:
    """A JSON-flavoured name for what a client sent, for error messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return _describe_string(value)
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__


def _describe_string(value: str) -> str:
    if not value:
        return "an empty string"
    return f"a string of {len(value)} characters"


def _quote(value: str) -> str:
    shown = value if len(value) <= 64 else value[:64] + "..."
    return json.dumps(shown)

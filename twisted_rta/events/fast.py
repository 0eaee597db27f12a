"""The msgspec fast path of ``decode_batch``, for the common, well-formed bodies.

msgspec decodes straight into typed Structs, checking types as it goes, faster than
json.loads alone (DESIGN.md section 6). It is trusted only where its answer equals the
stdlib's: whatever it fully decodes, json.loads accepts with the same values (it refuses
NaN/Infinity, 1e999, lone surrogate escapes, the integers json refuses, unknown keys and
wrong types). Any msgspec error sends the element, or the body, to the careful path, which
then decides. Every rule comes from ``rules``; this module only decides which events can
skip the careful validator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from attrs import frozen

from twisted_rta.events.framing import parse_value
from twisted_rta.events.ids import new_uuid4, uuid4_supply
from twisted_rta.events.model import BatchResult, BodyError, Event, EventError, EventLimits
from twisted_rta.events.rules import (
    AMOUNT_PROPERTY,
    MAX_ID_LENGTH,
    MAX_SUBJECT_LENGTH,
    MAX_TYPE_LENGTH,
    PURCHASE_TYPE,
    Rules,
    amount_problem,
    event_timestamp,
    limits_breach,
    not_an_object,
    validate,
)


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


def fast_batch(
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
        items = decoded if isinstance(decoded, list) else decoded.events
        # Bodies up to max_event_bytes cannot hold an oversized element: no spans needed.
        if len(body) > limits.max_event_bytes and not _sizes_fit(
            body, len(items), limits.max_event_bytes
        ):
            return None
    if not 0 < len(items) <= limits.max_batch_events:
        return None  # the careful path words these body errors

    # First pass: whatever needs the careful path for the whole body, and how many ids.
    rules = Rules.build(now, limits, new_id)
    needed = 0
    item: Any  # a _JsonEvent, or a _Parsed element msgspec refused
    for item in items:
        if type(item) is _JsonEvent:
            properties = item.properties
            if properties and limits_breach(properties, 0, rules) is not None:
                # Past the broken limit, nesting may be deep enough for json to give up on the
                # whole body (RecursionError): only the careful path can tell.
                return None
            if not item.id:
                needed += 1
        else:
            needed += 1
    if new_id is new_uuid4 and needed >= _BULK_IDS_FROM:
        rules = Rules.build(now, limits, uuid4_supply(needed))

    events: list[Event] = []
    errors: list[EventError] = []
    result: Event | EventError
    for index, item in enumerate(items):
        if type(item) is _JsonEvent:
            result = _judge(item, index, rules)
        else:
            value = item.value
            if type(value) is not dict:
                errors.append(not_an_object(index, value))
                continue
            # unicode_suspect=True is always exact (it only skips a check when it cannot fail).
            result = validate(value, index, rules, True)
        if type(result) is Event:
            events.append(result)
        else:
            errors.append(result)  # type: ignore[arg-type]  # not an Event: an EventError
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
    # The last "events" key wins, as in json.
    raws = decoded if isinstance(decoded, list) else decoded.events
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
            value, end = parse_value(text, 0)
        except BodyError:
            return None
        if end != len(text):
            return None
        items.append(_Parsed(value))
    return items


def _judge(item: _JsonEvent, index: int, rules: Rules) -> Event | EventError:
    """``validate`` for a msgspec-decoded event whose properties keep every limit.

    msgspec has checked the types; each condition below is one of validate's rules (same
    constants, same functions), and when any is broken validate itself words the error.
    """
    type_ = item.type.strip()
    event_id = item.id
    user_id = item.user_id
    session_id = item.session_id
    properties = item.properties
    raw_timestamp = item.timestamp
    timestamp = rules.now if raw_timestamp is None else event_timestamp(raw_timestamp, index, rules)
    if (
        type(timestamp) is EventError
        or not type_
        or len(type_) > MAX_TYPE_LENGTH
        or (event_id is not None and len(event_id) > MAX_ID_LENGTH)
        or (user_id is not None and len(user_id) > MAX_SUBJECT_LENGTH)
        or (session_id is not None and len(session_id) > MAX_SUBJECT_LENGTH)
        or (
            type_ == PURCHASE_TYPE
            and properties
            and amount_problem(properties.get(AMOUNT_PROPERTY)) is not None
        )
    ):
        # Some rule is broken: the careful validator names the first one. msgspec refuses
        # lone surrogates, so no string needs the Unicode check.
        return validate(msgspec.structs.asdict(item), index, rules, False)
    return Event(
        event_id or rules.new_id(),
        type_,
        timestamp,  # type: ignore[arg-type]  # not an EventError: a float
        user_id or None,
        session_id or None,
        {} if properties is None else properties,
        bool(event_id),
    )

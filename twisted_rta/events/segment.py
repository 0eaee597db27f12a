"""Segment's HTTP Tracking API (``POST /v1/track``, ``/v1/page``, ``/v1/screen``,
``/v1/identify``, ``/v1/group``, ``/v1/alias``, ``/v1/batch``): the bodies its SDKs send, and
the ``Event``s they become. No HTTP here: the write key found in a body is handed back for the
caller to check.

What maps to what (every event is then judged by our own rules, events/rules.py):

- The type: ``track`` -> the call's ``event`` name; ``page`` -> ``pageview``; ``screen``,
  ``identify``, ``group``, ``alias`` -> events of those names. In a batch each message names
  its call in ``type``; on the single-call routes the route is the call.
- ``messageId`` -> the event id; ``userId``, else ``anonymousId`` -> ``user_id`` (one of them
  is required, as Segment requires it; a number is taken as its digits).
- ``properties`` -> properties, as sent. Traits (``traits``, ``context.traits``) are not
  stored: they describe a user, not an event, and we keep no user profiles.
- Derived properties, which win over a property of the same name (as Plausible's reserved
  ones do): ``page`` = ``properties.path``, else the path of ``properties.url``, else
  ``context.page.path``, else the path of ``context.page.url`` (on a ``page`` call; on the
  other calls only from ``context.page``); ``referrer`` = ``properties.referrer``, else
  ``context.page.referrer``; ``utm_campaign``/``utm_source``/``utm_medium``/``utm_term``/
  ``utm_content`` from ``context.campaign``'s name/source/medium/term/content; ``name`` of a
  ``page`` or ``screen`` call; ``group_id`` of a ``group`` call; ``previous_id`` of an
  ``alias`` call. Other context (library, device, IP, title, search...) is not stored.
- A batch's ``context`` applies to each of its messages, under the message's own members.
- Time: ``timestamp``, else ``originalTimestamp`` (RFC 3339, as the SDKs send ISO 8601 with
  an offset); with ``sentAt`` (the message's, else the batch's) it is corrected by the client's
  clock offset, ``timestamp + (received - sentAt)``, Segment's rule; without ``sentAt`` it
  stands; without a timestamp the event is at its arrival. Out-of-range results get our
  ``timestamp_too_old``/``timestamp_in_future``.
- Sizes, Segment's: a call or a batch message at most 32 KB (and ``limits.max_event_bytes``),
  a batch body at most 500 KB (and ``limits.max_body_bytes``), at most
  ``limits.max_batch_events`` messages (Segment documents no count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import evolve, field, frozen

from twisted_rta.events.framing import batch_member, frame_event, oversized_members
from twisted_rta.events.members import (
    event_name,
    first_subject,
    id_error,
    instant,
    judge_each,
    page_of,
    path_of,
    text_of,
)
from twisted_rta.events.model import BatchResult, BodyError, Event, EventError, EventLimits
from twisted_rta.events.rules import (
    Rules,
    describe,
    not_an_object,
    properties_type_error,
    timestamp_in_range,
    validate,
)

PAGEVIEW = "pageview"
# The calls, with the event type each becomes (track: its ``event`` name).
CALL_TYPES = {
    "track": None,
    "page": PAGEVIEW,
    "screen": "screen",
    "identify": "identify",
    "group": "group",
    "alias": "alias",
}
BATCH = "batch"
MAX_CALL_BYTES = 32 * 1024  # Segment's bound on one call, and on each message of a batch
MAX_BATCH_BYTES = 500 * 1024  # Segment's bound on a batch request
_CAMPAIGN = {
    "name": "utm_campaign",
    "source": "utm_source",
    "medium": "utm_medium",
    "term": "utm_term",
    "content": "utm_content",
}
# Our names of the fields validate() reports, as the client sent them.
_FIELD_NAMES = {"type": "event", "id": "messageId"}


@frozen
class SegmentBody:
    """A framed body: its messages (not yet judged), the call of a single-call route (None
    for a batch: each message names its own), the batch's ``sentAt``, its ``writeKey``."""

    messages: list[Any]
    call: str | None
    sent_at: Any
    write_key: str | None
    unicode_suspect: bool
    oversized: dict[int, int]  # index -> size in bytes of a message over its bound
    context: dict[str, Any] = field(factory=dict)  # a batch's: under its messages' own


def frame_segment(body: bytes, call: str, limits: EventLimits) -> SegmentBody:
    """The messages of a body POSTed to ``/v1/<call>`` (``batch`` for the batch routes);
    every problem of the body as a whole raises ``BodyError``."""
    if call != BATCH:
        limit = min(MAX_CALL_BYTES, limits.max_event_bytes)
        obj, suspect = frame_event(body, limit)  # 413 event_too_large over it
        return SegmentBody([obj], call, None, _write_key(obj), suspect, {})
    limit = min(MAX_BATCH_BYTES, limits.max_body_bytes)
    if len(body) > limit:
        raise BodyError(
            413,
            "body_too_large",
            f"a batch must be at most {limit} bytes; got {len(body)} bytes",
        )
    obj, suspect = frame_event(body, len(body))
    write_key = _write_key(obj)
    messages = batch_member(obj, limits, "messages")
    oversized = oversized_members(messages, len(body), min(MAX_CALL_BYTES, limits.max_event_bytes))
    context = obj.get("context")
    if context is not None and type(context) is not dict:
        raise BodyError(
            400, "invalid_type", f'"context" must be an object; got {describe(context)}'
        )
    return SegmentBody(
        messages, None, obj.get("sentAt"), write_key, suspect, oversized, context or {}
    )


def segment_events(
    framed: SegmentBody, *, received: float, limits: EventLimits, new_id: Callable[[], str]
) -> BatchResult:
    """The events of a framed body received at ``received``; each message is judged on its
    own (a single call is a batch of one, index 0)."""
    rules = Rules.build(received, limits, new_id)
    return judge_each(
        framed.messages,
        framed.oversized,
        min(MAX_CALL_BYTES, limits.max_event_bytes),
        "a message",
        lambda message, index: _message(message, index, framed, rules),
    )


def _write_key(obj: dict[str, Any]) -> str | None:
    key = obj.get("writeKey")
    if key is None or type(key) is str:
        return key or None
    raise BodyError(400, "invalid_type", f'"writeKey" must be a string; got {describe(key)}')


# ---------------------------------------------------------------------------------------------
# One message


def _message(item: Any, index: int, framed: SegmentBody, rules: Rules) -> Event | EventError:
    if type(item) is not dict:
        return not_an_object(index, item)
    call = framed.call or item.get("type")
    if type(call) is not str or call not in CALL_TYPES:  # (only a batch message's may be)
        if call is None:
            return EventError(
                index, "type", "missing_field", f"type is required: one of {_calls()}"
            )
        shown = describe(call)
        return EventError(
            index, "type", "invalid_field", f"type must be one of {_calls()}; got {shown}"
        )
    event_type = event_name(
        CALL_TYPES[call] or item.get("event"), "event", index, "the name of the tracked event"
    )
    if type(event_type) is EventError:
        return event_type
    message_id = item.get("messageId")
    wrong_id = id_error(message_id, "messageId", index)
    if wrong_id is not None:
        return wrong_id
    user = first_subject(((key, item.get(key)) for key in ("userId", "anonymousId")), index)
    if user is None:
        return EventError(index, "userId", "missing_field", "userId or anonymousId is required")
    if type(user) is EventError:
        return user
    user_key, user_id = user  # type: ignore[misc]  # not an EventError: a pair
    properties = item.get("properties")
    if properties is not None and type(properties) is not dict:
        return properties_type_error(index, properties)
    derived = _derived(item, call, properties or {}, index, framed.context)
    if type(derived) is EventError:
        return derived
    timestamp = _timestamp(item, index, framed.sent_at, rules)
    if type(timestamp) is EventError:
        return timestamp
    native = {
        "type": event_type,
        "id": message_id,
        "user_id": user_id,
        "properties": {**(properties or {}), **derived},  # type: ignore[dict-item]
    }
    result = validate(native, index, rules, framed.unicode_suspect)
    if type(result) is EventError:
        field = result.field
        return evolve(
            result, field=user_key if field == "user_id" else _FIELD_NAMES.get(field, field)
        )
    return evolve(result, timestamp=timestamp)  # type: ignore[arg-type]


def _derived(
    item: dict[str, Any],
    call: str,
    properties: dict[str, Any],
    index: int,
    batch_context: dict[str, Any],
) -> dict[str, Any] | EventError:
    """The properties we derive (module notes); they win over properties of their name."""
    context = item.get("context")
    if context is not None and type(context) is not dict:
        return EventError(
            index, "context", "invalid_type", f"context must be an object; got {describe(context)}"
        )
    # A batch's context applies to every message; a message's own members win over it.
    context = {**batch_context, **context} if context else batch_context
    page_context = _member(context, "page")
    campaign = _member(context, "campaign")
    derived: dict[str, Any] = {}
    page = None
    if call == "page":
        page = page_of(text_of(properties, "path")) or path_of(text_of(properties, "url"))
    page = page or page_of(text_of(page_context, "path")) or path_of(text_of(page_context, "url"))
    if page:
        derived["page"] = page
    referrer = text_of(properties, "referrer") or text_of(page_context, "referrer")
    if referrer:
        derived["referrer"] = referrer
    for key, name in _CAMPAIGN.items():
        value = text_of(campaign, key)
        if value:
            derived[name] = value
    for call_of, key, name in (
        ("page", "name", "name"),
        ("screen", "name", "name"),
        ("group", "groupId", "group_id"),
        ("alias", "previousId", "previous_id"),
    ):
        if call != call_of or item.get(key) is None:
            continue
        value = item[key]
        if type(value) is int:
            value = str(value)
        if type(value) is not str:
            return EventError(
                index, key, "invalid_type", f"{key} must be a string; got {describe(value)}"
            )
        if value:
            derived[name] = value
    return derived


def _timestamp(
    item: dict[str, Any], index: int, batch_sent_at: Any, rules: Rules
) -> float | EventError:
    key = "timestamp" if item.get("timestamp") is not None else "originalTimestamp"
    raw = item.get(key)
    if raw is None:
        return rules.now
    seconds = instant(raw, key, index)
    if type(seconds) is EventError:
        return seconds
    sent_raw = item.get("sentAt")
    if sent_raw is None:
        sent_raw = batch_sent_at
    if sent_raw is not None:
        sent = instant(sent_raw, "sentAt", index)
        if type(sent) is EventError:
            return sent
        seconds += rules.now - sent  # type: ignore[operator]  # floats, narrowed above
    return timestamp_in_range(seconds, index, rules, field=key)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Helpers


def _member(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """An object member, or {} (context members of another shape are ignored, not stored)."""
    value = obj.get(key)
    return value if type(value) is dict else {}


def _calls() -> str:
    return ", ".join(CALL_TYPES)

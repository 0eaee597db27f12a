"""PostHog's capture API (``POST /capture``, ``/batch``, ``/e``, ``/i/v0/e``): the bodies its
SDKs send, and the ``Event``s they become. No HTTP here: the project key found in a body is
handed back for the caller to check, and so is the ``historical_migration`` flag (the caller
picks the limits for historical imports; they are applied here as given).

The bodies: one event object; a batch object ``{"api_key", "batch": [events],
"historical_migration", "sent_at"}`` (posthog-python, posthog-node, the mobile SDKs); a JSON
array of events (posthog-js); or, with ``form=True``, a form whose ``data`` field holds one of
those as JSON or as base64 of it (PostHog's legacy ``compression=base64``). An object is a
batch when it has a ``batch`` key, else it is one event. The project key: ``api_key``, else
``token`` (of the body; of the first event for an array), else the first event's
``properties.token``, else its ``properties.$token``.

What maps to what (every event is then judged by our own rules, events/rules.py):

- ``event`` -> the type: ``$pageview`` -> ``pageview``, ``$screen`` -> ``screen``; every
  other name as sent (``$autocapture``, ``$identify``, ``$pageleave``... keep theirs).
- ``uuid`` -> the event id (an event without one gets a new id); ``distinct_id``, else
  ``properties.distinct_id`` -> ``user_id`` (required, as PostHog requires it; a number is
  taken as its digits); ``properties.$session_id`` -> ``session_id``.
- ``properties`` -> properties, except the ones mapped above or naming the project
  (``token``, ``$token``, ``distinct_id``, ``$session_id``) and the ones describing a person
  rather than an event (``$set``, ``$set_once``, ``$unset``; a top-level ``$set`` or
  ``$set_once`` is ignored too): we keep no person profiles. Properties not starting with
  ``$`` are the client's own: kept as sent, and judged by our rules (a bad one rejects the
  event). ``$`` properties are the SDK's automatic ones (``$browser``, ``$lib``,
  ``$current_url``...): one breaking a limit (``limits.max_property_key_length``,
  ``max_string_length``, ``max_property_depth``, a non-finite number) is dropped instead,
  and they fill only the room ``limits.max_properties`` leaves next to the client's own and
  the derived ones, in the order sent (the rest are dropped).
- Derived properties, which win over a property of the same name (as in Segment's decoder):
  ``page`` of a ``$pageview`` = the path of ``$current_url``, else ``$pathname``;
  ``referrer`` = ``$referrer`` unless it is ``$direct``; ``name`` of a ``$screen`` =
  ``$screen_name``. A derived value longer than ``limits.max_string_length`` is not derived
  (its ``$`` source would be dropped too). posthog-js sends ``utm_source``, ``utm_medium``,
  ``utm_campaign``, ``utm_term``, ``utm_content`` as properties of those names: kept.
- Time, as PostHog's ingestion has it: ``timestamp`` (RFC 3339 with an offset; a number is
  refused), else the arrival minus ``offset`` (milliseconds before sending, posthog-js),
  else the arrival. The client's send time is the event's ``sent_at``, else the body's, else
  ``sent_at_ms`` (posthog-js's ``_`` query parameter, epoch milliseconds); when known, and
  unless ``properties.$ignore_sent_at`` is true, a timestamp is corrected by the client's
  clock offset, ``timestamp + (received - sent_at)``. Out-of-range results get our
  ``timestamp_too_old``/``timestamp_in_future``.
- Sizes: the body at most ``limits.max_body_bytes``; one event, or each event of a batch, at
  most ``limits.max_event_bytes``; at most ``limits.max_batch_events`` events.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from attrs import evolve, frozen

from twisted_rta.events.framing import batch_member, frame_batch, frame_event, oversized_members
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
    limits_breach,
    not_an_object,
    properties_type_error,
    timestamp_in_range,
    validate,
)

PAGEVIEW = "pageview"
# PostHog's event names that become one of ours; every other name is kept as sent.
EVENT_TYPES = {"$pageview": PAGEVIEW, "$screen": "screen"}
BATCH = "batch"
# Properties never stored: mapped to a field, naming the project, or describing a person.
DROPPED_PROPERTIES = frozenset(
    {"token", "$token", "distinct_id", "$session_id", "$set", "$set_once", "$unset"}
)
DIRECT = "$direct"  # posthog-js's $referrer when there was none
_MAX_SENT_AT_MS_DIGITS = 15  # epoch milliseconds up to the year 33658: more is no send time
# Our names of the fields validate() reports, as the client sent them.
_FIELD_NAMES = {"type": "event", "id": "uuid", "session_id": "properties.$session_id"}


@frozen
class PostHogBody:
    """A framed body: its events (not yet judged), whether it was one event object, its
    project key, its ``historical_migration`` flag and the client's send time (seconds)."""

    messages: list[Any]
    single: bool
    api_key: str | None
    historical: bool
    sent_at: float | None
    unicode_suspect: bool
    oversized: dict[int, int]  # index -> size in bytes of a message over max_event_bytes


def frame_posthog(
    body: bytes, limits: EventLimits, *, form: bool = False, sent_at_ms: str | None = None
) -> PostHogBody:
    """The events of a capture body (``form``: an x-www-form-urlencoded one; ``sent_at_ms``:
    the ``_`` query parameter); every problem of the body as a whole raises ``BodyError``."""
    if len(body) > limits.max_body_bytes:
        raise BodyError(
            413,
            "body_too_large",
            f"the body must be at most {limits.max_body_bytes} bytes; got {len(body)} bytes",
        )
    data = _form_data(body) if form else body
    if data.lstrip()[:1] == b"[":
        elements = frame_batch(data, limits)  # the array of posthog-js: sized as sent
        messages = elements.items
        first = messages[0]
        return PostHogBody(
            messages,
            False,
            _api_key(first if type(first) is dict else {}, first),
            False,
            _sent_at_ms(sent_at_ms),
            bool(elements.unicode_suspects),
            elements.oversized,
        )
    obj, suspect = frame_event(data, max(len(data), limits.max_event_bytes))
    sent_at = _body_sent_at(obj)
    if sent_at is None:
        sent_at = _sent_at_ms(sent_at_ms)
    historical = obj.get("historical_migration") is True
    if BATCH not in obj:
        if len(data) > limits.max_event_bytes:
            frame_event(data, limits.max_event_bytes)  # raises its 413 event_too_large
        return PostHogBody([obj], True, _api_key(obj, obj), historical, sent_at, suspect, {})
    messages = batch_member(obj, limits, "events")
    api_key = _api_key(obj, messages[0])
    oversized = oversized_members(messages, len(data), limits.max_event_bytes)
    return PostHogBody(messages, False, api_key, historical, sent_at, suspect, oversized)


def posthog_events(
    framed: PostHogBody, *, received: float, limits: EventLimits, new_id: Callable[[], str]
) -> BatchResult:
    """The events of a framed body received at ``received``; each is judged on its own (a
    single event is a batch of one, index 0)."""
    rules = Rules.build(received, limits, new_id)
    return judge_each(
        framed.messages,
        framed.oversized,
        limits.max_event_bytes,
        "an event",
        lambda message, index: _message(message, index, framed, rules),
    )


# ---------------------------------------------------------------------------------------------
# The body


def _form_data(body: bytes) -> bytes:
    """The JSON in a form's ``data`` field: as sent, or decoded from base64."""
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BodyError(400, "invalid_body", "the form body is not valid UTF-8") from None
    data = next((value for key, value in fields if key == "data"), None)
    if data is None:
        raise BodyError(
            400, "invalid_body", 'the form has no "data" field; expected the events as JSON'
        )
    text = data.strip()
    if text[:1] in ("{", "["):
        return text.encode("utf-8")
    # Base64, whose "+" an unencoded form turns into a space (as PostHog reads it).
    text = "".join(text.replace(" ", "+").split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BodyError(
            400,
            "invalid_body",
            'the form\'s "data" field must hold the events as JSON or as base64 of it',
        ) from None


def _api_key(top: dict[str, Any], first: Any) -> str | None:
    """``api_key``, else ``token`` of ``top``, else the first event's ``properties.token``,
    else its ``properties.$token``."""
    for key in ("api_key", "token"):
        value = top.get(key)
        if value is None or value == "":
            continue
        if type(value) is not str:
            raise BodyError(400, "invalid_type", f'"{key}" must be a string; got {describe(value)}')
        return value
    properties = first.get("properties") if type(first) is dict else None
    if type(properties) is dict:
        for key in ("token", "$token"):
            value = properties.get(key)
            if type(value) is str and value:
                return value
    return None


def _body_sent_at(obj: dict[str, Any]) -> float | None:
    raw = obj.get("sent_at")
    if raw is None:
        return None
    seconds = instant(raw, "sent_at", 0)
    if isinstance(seconds, EventError):
        raise BodyError(400, "invalid_timestamp", seconds.message)
    return seconds


def _sent_at_ms(raw: str | None) -> float | None:
    """posthog-js's ``_`` parameter as seconds; anything but digits is ignored (some clients
    send it only to bust caches)."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_SENT_AT_MS_DIGITS:
        return None
    return int(raw) / 1000


# ---------------------------------------------------------------------------------------------
# One event


def _message(item: Any, index: int, framed: PostHogBody, rules: Rules) -> Event | EventError:
    if type(item) is not dict:
        return not_an_object(index, item)
    name = event_name(item.get("event"), "event", index, "the name of the captured event")
    if type(name) is EventError:
        return name
    event_type = EVENT_TYPES.get(name, name)  # type: ignore[arg-type]  # a str
    uuid = item.get("uuid")
    wrong_id = id_error(uuid, "uuid", index)
    if wrong_id is not None:
        return wrong_id
    properties = item.get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is not dict:
        return properties_type_error(index, properties)
    user = _user(item, properties, index)
    if type(user) is EventError:
        return user
    user_key, user_id = user  # type: ignore[misc]  # not an EventError: a pair
    timestamp = _timestamp(item, properties, index, framed.sent_at, rules)
    if type(timestamp) is EventError:
        return timestamp
    native: dict[str, Any] = {
        "type": event_type,
        "user_id": user_id,
        "session_id": properties.get("$session_id"),
        "properties": _kept(properties, _derived(event_type, properties, rules), rules),
    }
    if uuid:  # else validate draws an id
        native["id"] = uuid
    result = validate(native, index, rules, framed.unicode_suspect)
    if type(result) is EventError:
        field = result.field
        return evolve(
            result, field=user_key if field == "user_id" else _FIELD_NAMES.get(field, field)
        )
    return evolve(result, timestamp=timestamp)  # type: ignore[arg-type]


def _user(
    item: dict[str, Any], properties: dict[str, Any], index: int
) -> tuple[str, str] | EventError:
    """(the field it came from, user_id): ``distinct_id``, else ``properties.distinct_id``."""
    candidates = (
        ("distinct_id", item.get("distinct_id")),
        ("properties.distinct_id", properties.get("distinct_id")),
    )
    found = first_subject(candidates, index)
    if found is None:
        return EventError(
            index,
            "distinct_id",
            "missing_field",
            "distinct_id is required: the id of the person the event is about",
        )
    return found


def _derived(event_type: str, properties: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """The properties we derive (module notes); they win over properties of their name."""
    derived: dict[str, Any] = {}
    if event_type == PAGEVIEW:
        page = path_of(text_of(properties, "$current_url")) or page_of(
            text_of(properties, "$pathname")
        )
        if page:
            derived["page"] = page
    referrer = text_of(properties, "$referrer")
    if referrer and referrer != DIRECT:
        derived["referrer"] = referrer
    if event_type == "screen":
        name = text_of(properties, "$screen_name")
        if name:
            derived["name"] = name
    return {key: value for key, value in derived.items() if len(value) <= rules.max_string_length}


def _kept(properties: dict[str, Any], derived: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """The properties stored: the client's own and the derived ones, then the ``$`` ones
    within our limits while there is room (module notes)."""
    own = [key for key in properties if key not in DROPPED_PROPERTIES and key[:1] != "$"]
    room = rules.max_properties - len(derived.keys() | own)
    kept: dict[str, Any] = {}
    for key, value in properties.items():
        if key in DROPPED_PROPERTIES:
            continue
        if key[:1] != "$":
            kept[key] = value
        elif room > 0 and limits_breach({key: value}, 0, rules) is None:
            kept[key] = value
            room -= 1
    return {**kept, **derived}


def _timestamp(
    item: dict[str, Any],
    properties: dict[str, Any],
    index: int,
    body_sent_at: float | None,
    rules: Rules,
) -> float | EventError:
    raw = item.get("timestamp")
    if raw is None:
        offset = item.get("offset")
        if offset is None:
            return rules.now
        if type(offset) is not int and type(offset) is not float:
            return EventError(
                index,
                "offset",
                "invalid_type",
                f"offset must be a number of milliseconds; got {describe(offset)}",
            )
        # sent_at - offset, corrected by (received - sent_at): the arrival minus the offset,
        # whether or not sent_at is known (as PostHog has it).
        try:
            seconds = rules.now - offset / 1000
        except OverflowError:  # an integer beyond float range: far outside any window anyway
            seconds = -math.inf if offset > 0 else math.inf
        return timestamp_in_range(seconds, index, rules, field="offset")
    stamped = instant(raw, "timestamp", index)
    if isinstance(stamped, EventError):
        return stamped
    if properties.get("$ignore_sent_at") is not True:
        sent_at = body_sent_at
        if item.get("sent_at") is not None:
            own = instant(item["sent_at"], "sent_at", index)
            if isinstance(own, EventError):
                return own
            sent_at = own
        if sent_at is not None:
            stamped += rules.now - sent_at  # the client's clock offset
    return timestamp_in_range(stamped, index, rules, field="timestamp")

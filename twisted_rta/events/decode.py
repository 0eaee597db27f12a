"""The public decoders: a request body -> validated Events, or the errors to answer with."""

from __future__ import annotations

from collections.abc import Callable

from twisted_rta.events.fast import fast_batch
from twisted_rta.events.framing import frame_batch, frame_event
from twisted_rta.events.ids import new_uuid4
from twisted_rta.events.model import (
    BatchResult,
    Event,
    EventError,
    EventLimits,
    RejectedEvent,
)
from twisted_rta.events.rules import Rules, not_an_object, validate


def decode_event(
    body: bytes,
    *,
    now: float,
    limits: EventLimits,
    new_id: Callable[[], str] = new_uuid4,
) -> Event:
    """Decode one event body; raise BodyError (whole body) or RejectedEvent (a field rule)."""
    obj, unicode_suspect = frame_event(body, limits.max_event_bytes)
    result = validate(obj, None, Rules.build(now, limits, new_id), unicode_suspect)
    if type(result) is EventError:
        raise RejectedEvent(result)
    return result  # type: ignore[return-value]  # not an EventError: an Event


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
        result = fast_batch(body, now, limits, new_id)
        if result is not None:
            return result
    return decode_batch_careful(body, now=now, limits=limits, new_id=new_id)


def decode_batch_careful(
    body: bytes,
    *,
    now: float,
    limits: EventLimits,
    new_id: Callable[[], str] = new_uuid4,
) -> BatchResult:
    """decode_batch with the stdlib scanner only: the reference for every answer and error."""
    elements = frame_batch(body, limits)
    rules = Rules.build(now, limits, new_id)
    events: list[Event] = []
    errors: list[EventError] = []
    oversized = elements.oversized
    suspects = elements.unicode_suspects
    for index, item in enumerate(elements.items):
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
            errors.append(not_an_object(index, item))
        else:
            result = validate(item, index, rules, index in suspects if suspects else False)
            if type(result) is Event:
                events.append(result)
            else:
                errors.append(result)  # type: ignore[arg-type]  # not an Event: an EventError
    return BatchResult(tuple(events), tuple(errors), len(elements.items))

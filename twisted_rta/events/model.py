"""The event value types: what the decoder produces and what the rest of the daemon consumes.

Pure values, no decoding: importing this module loads neither msgspec nor json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from attrs import frozen


@frozen(slots=True)
class Event:
    """One validated, normalised analytics event.

    ``timestamp`` is POSIX seconds (UTC). ``properties`` is the decoded JSON object;
    nobody mutates it after validation. ``id_given``: the client sent ``id`` (ours,
    Segment's ``messageId``, PostHog's ``uuid``), so a resend of it may be deduplicated;
    an id we drew is unique already and never checked.
    """

    id: str
    type: str
    timestamp: float
    user_id: str | None = None
    session_id: str | None = None
    properties: Mapping[str, Any] = {}
    id_given: bool = False


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

"""The Event value type and the JSON -> Event validation rules (pure, no Twisted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen


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

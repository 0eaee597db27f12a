"""Small builders shared by the aggregation tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.events.model import Event

# 2024-01-01T00:00:00Z: a minute and hour boundary, so offsets read naturally.
T0 = 1_704_067_200.0


def event(
    type: str = "signup",
    timestamp: float = T0,
    user_id: str | None = None,
    session_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Event:
    return Event(
        id="e",
        type=type,
        timestamp=timestamp,
        user_id=user_id,
        session_id=session_id,
        properties=properties or {},
    )


def aggregator(
    window_sizes: Sequence[float] = (60.0,),
    grace: float = 5.0,
    max_dimension_values: int = 100,
    started_at: float = T0,
) -> Aggregator:
    return Aggregator(
        window_sizes=window_sizes,
        grace=grace,
        max_dimension_values=max_dimension_values,
        started_at=started_at,
    )

"""Resolution: one window width of the aggregation and how long its stored windows are kept."""

from __future__ import annotations

from attrs import frozen


@frozen
class Resolution:
    """One window width and how long its stored windows are kept."""

    size: float
    retention: float

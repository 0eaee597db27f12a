"""WindowStore: where closed windows go when the flush loop hands them over."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred

from twisted_rta.aggregation.windows import ClosedWindow


class WindowStore(Protocol):
    """Accepts closed windows (and late-event deltas for windows closed earlier)."""

    def write(self, windows: Sequence[ClosedWindow]) -> Deferred[None]:
        """Persist ``windows`` as one unit; fails without partial effects."""

    def recent(self) -> Sequence[ClosedWindow]:
        """Recently closed windows, oldest first, late deltas merged in."""

    def close(self) -> Deferred[None]:
        """Release resources; nothing is written after this."""

"""The bounded intake queue: batches of accepted events, bounded by the number of events."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredQueue

from twisted_rta.events.model import Event


@define
class IntakeQueue:
    """Holds accepted batches until a worker takes them.

    One queue item per request keeps the per-event cost low (DESIGN.md 6); the capacity
    counts events so a 1000-event batch weighs what it holds. ``offer`` is all or
    nothing: a batch that does not fit is refused whole, never partly dropped.
    """

    capacity: int
    depth: int = 0
    closed: bool = False
    _items: DeferredQueue = field(factory=DeferredQueue, init=False)

    def offer(self, events: Sequence[Event]) -> bool:
        """Enqueue all of ``events`` or none of them; False when full or closed."""
        if self.closed:
            return False
        if not events:
            return True
        if self.depth + len(events) > self.capacity:
            return False
        self.depth += len(events)
        self._items.put(events)
        return True

    def get(self) -> Deferred[Sequence[Event]]:
        """A Deferred for the next batch; cancelling it leaves the queue untouched."""
        return self._items.get().addCallback(self._taken)

    def take_ready(self, max_events: int) -> list[Sequence[Event]]:
        """Remove batches that are already waiting, up to about ``max_events`` events, without
        waiting (a worker coalesces many one-event requests into one aggregation pass)."""
        pending = self._items.pending
        taken: list[Sequence[Event]] = []
        count = 0
        while pending and count < max_events:
            batch = pending.pop(0)
            taken.append(batch)
            count += len(batch)
        self.depth -= count
        return taken

    def close(self) -> None:
        """Refuse every later offer (shutdown has begun)."""
        self.closed = True

    def take_all(self) -> list[Sequence[Event]]:
        """Remove and return every waiting batch (used to drain at shutdown)."""
        batches = list(self._items.pending)
        self._items.pending.clear()
        self.depth = 0
        return batches

    def _taken(self, events: Sequence[Event]) -> Sequence[Event]:
        self.depth -= len(events)
        return events

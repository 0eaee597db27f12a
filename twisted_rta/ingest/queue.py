"""The bounded intake queue: accepted requests, bounded by the number of events they hold."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, DeferredQueue

from twisted_rta.events.model import Event


@frozen(slots=True)
class Accepted:
    """The events of one accepted request and its journal record (``seq`` 0: no journal)."""

    seq: int
    events: Sequence[Event]


@define
class IntakeQueue:
    """Holds accepted requests until a worker takes them, in the order they were accepted.

    One queue item per request keeps the per-event cost low; the capacity counts events so a
    1000-event batch weighs what it holds. ``offer`` is all or nothing: a batch that does not
    fit is refused whole, never partly dropped.
    """

    capacity: int
    depth: int = 0
    closed: bool = False
    _items: DeferredQueue = field(factory=DeferredQueue, init=False)

    def has_room(self, events: int) -> bool:
        """Whether ``offer`` of that many events would succeed now."""
        return not self.closed and self.depth + events <= self.capacity

    def offer(self, events: Sequence[Event], seq: int = 0) -> bool:
        """Enqueue all of ``events`` or none of them; False when full or closed."""
        if self.closed:
            return False
        if not events:
            return True
        if self.depth + len(events) > self.capacity:
            return False
        self.depth += len(events)
        self._items.put(Accepted(seq, events))
        return True

    def get(self) -> Deferred[Accepted]:
        """A Deferred for the next request; cancelling it leaves the queue untouched."""
        return self._items.get().addCallback(self._taken)

    def take_ready(self, max_events: int, max_requests: int) -> list[Accepted]:
        """Remove requests that are already waiting, without waiting (a worker coalesces many
        small requests into one pass): at most ``max_requests`` of them, and no more once
        ``max_events`` events are taken (whole requests: the last may pass it)."""
        pending = self._items.pending
        limit = min(len(pending), max_requests)
        taken = count = 0
        while taken < limit and count < max_events:
            count += len(pending[taken].events)
            taken += 1
        items: list[Accepted] = pending[:taken]
        del pending[:taken]  # one move of the rest, not one per request taken
        self.depth -= count
        return items

    def close(self) -> None:
        """Refuse every later offer (shutdown has begun)."""
        self.closed = True

    def take_all(self) -> list[Accepted]:
        """Remove and return every waiting request (used to drain at shutdown)."""
        items = list(self._items.pending)
        self._items.pending.clear()
        self.depth = 0
        return items

    def _taken(self, item: Accepted) -> Accepted:
        self.depth -= len(item.events)
        return item

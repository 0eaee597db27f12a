"""IntakeQueue: bounded by events, all-or-nothing offers, drain and close."""

from __future__ import annotations

from twisted.internet.defer import CancelledError

from tests.helpers import failure_of, result_of
from twisted_rta.events.model import Event
from twisted_rta.ingest.queue import Accepted, IntakeQueue


def events(count: int) -> tuple[Event, ...]:
    return tuple(Event(id=str(i), type="x", timestamp=0.0) for i in range(count))


def test_capacity_counts_events_not_requests() -> None:
    queue = IntakeQueue(capacity=10)
    assert queue.offer(events(6))
    assert queue.offer(events(4))
    assert queue.depth == 10
    assert not queue.offer(events(1))
    assert queue.depth == 10


def test_a_batch_that_does_not_fit_is_refused_whole() -> None:
    queue = IntakeQueue(capacity=10)
    queue.offer(events(8))
    assert not queue.offer(events(3))
    assert queue.depth == 8
    assert queue.offer(events(2))


def test_get_returns_batches_in_order_and_lowers_depth() -> None:
    queue = IntakeQueue(capacity=10)
    first, second = events(2), events(3)
    queue.offer(first)
    queue.offer(second)
    assert result_of(queue.get()).events == first
    assert queue.depth == 3
    assert result_of(queue.get()).events == second
    assert queue.depth == 0


def test_waiting_get_fires_on_offer() -> None:
    queue = IntakeQueue(capacity=10)
    waiting = queue.get()
    assert not waiting.called
    batch = events(2)
    queue.offer(batch)
    assert result_of(waiting) == Accepted(0, batch)
    assert queue.depth == 0


def test_cancelled_get_does_not_swallow_the_next_offer() -> None:
    queue = IntakeQueue(capacity=10)
    waiting = queue.get()
    waiting.cancel()
    failure_of(waiting).trap(CancelledError)
    queue.offer(events(1))
    assert queue.depth == 1
    assert len(queue.take_all()) == 1


def test_take_all_and_close() -> None:
    queue = IntakeQueue(capacity=10)
    queue.offer(events(2), 1)
    queue.offer(events(3), 2)
    assert [(item.seq, len(item.events)) for item in queue.take_all()] == [(1, 2), (2, 3)]
    assert queue.depth == 0
    queue.close()
    assert not queue.offer(events(1))
    assert queue.depth == 0


def test_empty_offer_is_a_no_op() -> None:
    queue = IntakeQueue(capacity=1)
    assert queue.offer(())
    assert queue.depth == 0


def test_has_room_answers_what_offer_would() -> None:
    queue = IntakeQueue(capacity=5)
    queue.offer(events(3))
    assert queue.has_room(2) and not queue.has_room(3)
    queue.close()
    assert not queue.has_room(1)

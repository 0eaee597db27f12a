"""WorkerPool: cooperative aggregation, survival after a failing batch, drain on stop."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.task import Clock, Cooperator

from tests.helpers import NOW, result_of
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.events.model import Event
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool


def events(count: int, kind: str = "x") -> tuple[Event, ...]:
    return tuple(Event(id=str(i), type=kind, timestamp=NOW) for i in range(count))


def one_step_per_tick() -> Callable[[], bool]:
    """A cooperator time budget of exactly one slice per reactor turn."""
    return lambda: True


def make_pool(
    clock: Clock,
    *,
    workers: int = 1,
    cooperator: Cooperator | None = None,
    aggregator: Any = None,
    on_applied: Callable[[int], None] = lambda seq: None,
) -> tuple[WorkerPool, IntakeQueue, Any]:
    queue = IntakeQueue(capacity=100_000)
    aggregator = aggregator or Aggregator(
        window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=NOW
    )
    pool = WorkerPool(
        queue,
        aggregator,
        clock=clock,
        worker_count=workers,
        slice_size=100,
        cooperator=cooperator,
        on_applied=on_applied,
    )
    return pool, queue, aggregator


def total(aggregator: Aggregator) -> int:
    snapshot = aggregator.metric("total_events")
    return 0 if snapshot is None else snapshot.count


def test_workers_aggregate_queued_batches() -> None:
    clock = Clock()
    clock.advance(NOW)
    pool, queue, aggregator = make_pool(clock, workers=2)
    pool.startService()
    queue.offer(events(250))
    queue.offer(events(50))
    for _ in range(10):
        clock.advance(0)
    assert total(aggregator) == 300
    assert pool.processed_events == 300
    assert pool.alive == 2


def test_waiting_requests_are_applied_whole_in_steps_that_yield_to_the_reactor() -> None:
    clock = Clock()
    clock.advance(NOW)
    turns: list[Callable[[], None]] = []  # cooperator work handed back to the "reactor"

    class Scheduled:
        def cancel(self) -> None:
            pass

    cooperator = Cooperator(
        terminationPredicateFactory=one_step_per_tick,
        scheduler=lambda work: turns.append(work) or Scheduled(),
        started=False,
    )
    applied: list[int] = []
    pool, queue, aggregator = make_pool(clock, cooperator=cooperator, on_applied=applied.append)
    for seq in range(1, 11):
        queue.offer(events(30), seq)  # ten requests waiting: one worker takes them together
    pool.startService()
    turns.pop(0)()
    # One step per reactor turn: whole requests up to about 100 events (four of 30), so
    # other calls (an HTTP /health) run between steps and no step holds part of a request.
    assert total(aggregator) == 120 and applied == [1, 2, 3, 4]
    while turns:
        turns.pop(0)()
    assert total(aggregator) == 300 and applied == list(range(1, 11))


def test_a_request_larger_than_a_step_is_applied_whole() -> None:
    clock = Clock()
    clock.advance(NOW)
    applied: list[int] = []
    pool, queue, aggregator = make_pool(clock, on_applied=applied.append)
    pool.startService()
    queue.offer(events(1000), 7)
    clock.advance(0)
    assert total(aggregator) == 1000 and applied == [7]


class ExplodingAggregator:
    def __init__(self, real: Aggregator) -> None:
        self.real = real

    def add_many(self, batch: Iterable[Event], now: float) -> None:
        batch = list(batch)
        if any(event.type == "boom" for event in batch):
            raise RuntimeError("aggregation bug")
        self.real.add_many(batch, now)


def test_a_failing_batch_does_not_kill_the_worker() -> None:
    clock = Clock()
    clock.advance(NOW)
    real = Aggregator(window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=NOW)
    pool, queue, _ = make_pool(clock, aggregator=ExplodingAggregator(real))
    pool.startService()
    queue.offer(events(5, kind="boom"))
    for _ in range(5):
        clock.advance(0)
    queue.offer(events(7))
    for _ in range(5):
        clock.advance(0)
    assert pool.failed_batches == 1
    assert pool.alive == 1
    assert total(real) == 7


def test_stop_cancels_idle_gets_and_drains_the_queue() -> None:
    clock = Clock()
    clock.advance(NOW)
    pool, queue, aggregator = make_pool(clock, workers=2)
    pool.startService()
    queue.offer(events(10))  # taken by worker 0, not yet aggregated
    queue.offer(events(20))  # taken by worker 1
    queue.offer(events(30))  # waits in the queue
    stopping = pool.stopService()
    for _ in range(10):
        clock.advance(0)
    result_of(stopping)
    assert total(aggregator) == 60
    assert pool.alive == 0
    # A cancelled get must not swallow later offers (DESIGN.md 6).
    queue.offer(events(1))
    assert queue.depth == 1

"""How many waiting requests a worker takes in one pass: at most
``processing.coalesce_requests`` requests, and no more once 1000 events are taken."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.task import Clock

from tests.conftest import make_daemon
from tests.helpers import NOW
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.events.model import Event
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool


def events(count: int) -> tuple[Event, ...]:
    return tuple(Event(id=str(i), type="x", timestamp=NOW) for i in range(count))


def test_take_ready_stops_at_the_request_limit_and_keeps_the_rest_in_order() -> None:
    queue = IntakeQueue(capacity=1000)
    for seq in range(1, 8):
        queue.offer(events(1), seq)
    taken = queue.take_ready(max_events=1000, max_requests=3)
    assert [item.seq for item in taken] == [1, 2, 3]
    assert queue.depth == 4
    assert [item.seq for item in queue.take_ready(max_events=1000, max_requests=0)] == []
    assert [item.seq for item in queue.take_all()] == [4, 5, 6, 7]


def test_take_ready_stops_at_the_event_limit_with_whole_requests() -> None:
    queue = IntakeQueue(capacity=10_000)
    for seq in range(1, 6):
        queue.offer(events(400), seq)
    taken = queue.take_ready(max_events=1000, max_requests=1000)
    assert [item.seq for item in taken] == [1, 2, 3]  # 1200 events: the last passes it
    assert queue.depth == 800


class PassRecorder(Aggregator):
    """An aggregator that notes the events of each ``add_many``: one per pass here."""

    def __init__(self) -> None:
        super().__init__(window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=NOW)
        self.passes: list[int] = []

    def add_many(self, events: Iterable[Event], now: float) -> None:
        batch = list(events)
        self.passes.append(len(batch))
        super().add_many(batch, now)


def passes(coalesce_requests: int, requests: int) -> list[int]:
    """How many of ``requests`` waiting one-event requests one worker takes in each pass."""
    clock = Clock()
    clock.advance(NOW)
    queue = IntakeQueue(capacity=100_000)
    aggregator = PassRecorder()
    pool = WorkerPool(
        queue,
        aggregator,
        clock=clock,
        worker_count=1,
        slice_size=100_000,  # one step per pass: a pass is one add_many
        coalesce_requests=coalesce_requests,
    )
    for seq in range(1, requests + 1):
        queue.offer(events(1), seq)
    pool.startService()
    clock.advance(0)
    assert pool.batches_processed == len(aggregator.passes)
    return aggregator.passes


def test_a_worker_takes_at_most_coalesce_requests_per_pass() -> None:
    assert passes(3, 8) == [3, 3, 2]
    assert passes(1, 3) == [1, 1, 1]
    assert passes(1000, 8) == [8]


def test_the_config_value_reaches_the_workers() -> None:
    for coalesce, expected in ((2, 3), (1000, 1)):
        daemon = make_daemon(
            {"processing": {"worker_count": 1, "coalesce_requests": coalesce}}, start=False
        )
        queue, workers = daemon.service.queue, daemon.service.workers
        for seq in range(1, 6):
            queue.offer(events(1), seq)
        daemon.service.privilegedStartService()
        daemon.service.startService()
        for _ in range(20):
            daemon.reactor.advance(0)
        assert (workers.processed_events, workers.batches_processed) == (5, expected), coalesce

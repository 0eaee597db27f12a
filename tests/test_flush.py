"""FlushService: closes due windows on a LoopingCall, survives failing ticks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from tests.helpers import NOW, result_of
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.events import Event
from twisted_rta.flush import FlushService

MINUTE = NOW - NOW % 60


class ListStore:
    def __init__(self) -> None:
        self.writes: list[list[ClosedWindow]] = []
        self.fail_next = 0

    def write(self, windows: Sequence[ClosedWindow]) -> Deferred[None]:
        if self.fail_next:
            self.fail_next -= 1
            return fail(OSError("store down"))
        self.writes.append(list(windows))
        return succeed(None)

    def recent(self) -> Sequence[ClosedWindow]:
        return [window for batch in self.writes for window in batch]

    def close(self) -> Deferred[None]:
        return succeed(None)


def setup(clock: Clock, aggregator: Any = None) -> tuple[FlushService, Aggregator, ListStore]:
    clock.advance(MINUTE + 1)
    aggregator = aggregator or Aggregator(
        window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=NOW
    )
    store = ListStore()
    flush = FlushService(aggregator, store, clock=clock, interval=5.0)
    return flush, aggregator, store


def event(ts: float) -> Event:
    return Event(id="e", type="x", timestamp=ts, user_id="u")


def test_window_is_written_once_after_end_plus_grace() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    clock.advance(55)  # MINUTE+56: window ends at +60, grace 10 -> due at +70
    assert store.writes == []
    clock.advance(10)  # +66
    assert store.writes == []
    clock.advance(5)  # +71
    assert [[w.start for w in batch] for batch in store.writes] == [[MINUTE]]
    clock.advance(30)
    assert len(store.writes) == 1  # closed exactly once
    assert flush.windows_written == 1


def test_a_failing_tick_is_counted_and_the_loop_keeps_running() -> None:
    clock = Clock()

    class Exploding(Aggregator):
        explode = True

        def close_due(self, now: float) -> list[ClosedWindow]:
            if self.explode:
                self.explode = False
                raise RuntimeError("bug in close_due")
            return super().close_due(now)

    aggregator = Exploding(window_sizes=(60.0,), grace=10.0, max_dimension_values=100,
                           started_at=NOW)
    flush, aggregator, store = setup(clock, aggregator)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    clock.advance(5)
    assert flush.failures == 1
    assert flush.alive
    for _ in range(14):
        clock.advance(5)
    assert flush.ticks == 15
    assert [w.start for batch in store.writes for w in batch] == [MINUTE]


def test_store_failure_is_counted_not_fatal() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    store.fail_next = 1
    flush.startService()
    for _ in range(15):
        clock.advance(5)
    assert flush.failures == 1
    assert flush.alive
    assert flush.last_tick_at == clock.seconds()


def test_final_flush_closes_open_windows() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    flush.stopService()
    assert not flush.alive
    assert result_of(Deferred.fromCoroutine(flush.final_flush())) == 1
    assert [w.events_count for batch in store.writes for w in batch] == [1]
    assert result_of(Deferred.fromCoroutine(flush.final_flush())) == 0

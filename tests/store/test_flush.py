"""FlushService: closes due windows on a LoopingCall, writes them with the totals, keeps
them pending while the store fails, and never writes a window twice."""

from __future__ import annotations

from itertools import pairwise

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.helpers import NOW, failure_of, result_of
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.events.model import Event
from twisted_rta.store.flush import FlushService, WindowsNotPersisted
from twisted_rta.store.interface import FlushBatch, StoredMetric
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.store.memory import MemoryWindowStore

MINUTE = NOW - NOW % 60


class CountingStore(MemoryWindowStore):
    def __init__(self) -> None:
        super().__init__(node_id="n1")
        self.writes: list[list[ClosedWindow]] = []
        self.held: Deferred[None] | None = None

    def write(self, batch: FlushBatch) -> Deferred[int]:
        result = super().write(batch)
        if self.available:
            self.writes.append([window for _, window in batch.windows])
        if self.held is not None:
            held, self.held = self.held, None
            return held.addCallback(lambda _: result)
        return result


def setup(
    clock: Clock,
    aggregator: Aggregator | None = None,
    *,
    max_pending: int = 100,
    interval: float = 5.0,
) -> tuple[FlushService, Aggregator, CountingStore]:
    clock.advance(MINUTE + 1)
    aggregator = aggregator or Aggregator(
        window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=clock.seconds()
    )
    store = CountingStore()
    store_service = StoreService(
        store,
        aggregator,
        clock=clock,
        retry_initial=1.0,
        retry_max=8.0,
        on_fatal=lambda reason: None,
    )
    store_service.startService()
    flush = FlushService(
        aggregator,
        store_service,
        clock=clock,
        interval=interval,
        max_pending=max_pending,
        retry_initial=1.0,
        retry_max=8.0,
        keep_recent=10,
        jitter=lambda: 0.0,
    )
    return flush, aggregator, store


def event(ts: float, user: str = "u") -> Event:
    return Event(id="e", type="x", timestamp=ts, user_id=user)


def ticks(clock: Clock, count: int, step: float = 5.0) -> None:
    for _ in range(count):
        clock.advance(step)


def written_starts(store: CountingStore) -> list[float]:
    return [window.start for batch in store.writes for window in batch]


def test_window_is_written_once_after_end_plus_grace() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    ticks(clock, 13)  # MINUTE+66: due at +70
    assert written_starts(store) == []
    ticks(clock, 1)
    assert written_starts(store) == [MINUTE]
    ticks(clock, 6)
    assert written_starts(store) == [MINUTE]  # closed exactly once
    assert flush.windows_written == 1
    assert [window.start for window in flush.recently_closed()] == [MINUTE]


def test_totals_are_written_with_the_windows() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2, "a"), clock.seconds())
    aggregator.add(event(MINUTE + 3, "b"), clock.seconds())
    flush.startService()
    ticks(clock, 1)
    totals = result_of(store.load_totals())
    assert totals["total_events"].count == 2
    assert totals["unique_users"].estimate == 2


def test_a_failing_tick_is_counted_and_the_loop_keeps_running() -> None:
    clock = Clock()

    class Exploding(Aggregator):
        explode = True

        def close_due(self, now: float) -> list[ClosedWindow]:
            if self.explode:
                self.explode = False
                raise RuntimeError("bug in close_due")
            return super().close_due(now)

    aggregator = Exploding(
        window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=NOW
    )
    flush, aggregator, store = setup(clock, aggregator)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    ticks(clock, 1)
    assert flush.failures == 1
    assert flush.alive
    ticks(clock, 14)
    assert flush.periodic.ticks == 15
    assert written_starts(store) == [MINUTE]


def test_failed_writes_stay_pending_and_are_written_once_when_the_store_returns() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock, max_pending=2)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    aggregator.add(event(MINUTE + 62), clock.seconds())
    store.available = False
    flush.startService()
    ticks(clock, 28)  # both minutes are due, every write fails
    assert flush.pending_count == 2 and written_starts(store) == []
    assert flush.backlogged
    assert flush.write_failures >= 2
    assert flush.last_error == "memory store marked unavailable"
    store.available = True
    ticks(clock, 3)  # the backoff is at most 8s
    assert written_starts(store) == [MINUTE, MINUTE + 60]
    assert flush.pending_count == 0
    assert not flush.backlogged
    assert flush.last_error is None
    ticks(clock, 5)
    assert written_starts(store) == [MINUTE, MINUTE + 60]


def test_backoff_grows_between_failed_attempts() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    store.available = False
    flush.startService()
    attempts = []
    for _ in range(60):
        clock.advance(1.0)
        attempts.append(flush.write_failures)
    # The loop ticks every 5s but writes back off 1, 2, 4, 8, 8 ... seconds.
    assert attempts[-1] < 12


def test_write_retries_follow_the_backoff_policy_and_reset_after_success() -> None:
    clock = Clock()
    # Ticks every 0.5 s, so the backoff alone spaces the attempts.
    flush, aggregator, store = setup(clock, interval=0.5)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    store.available = False
    flush.startService()
    failed_at = []
    for _ in range(80):
        before = flush.write_failures
        clock.advance(0.5)
        if flush.write_failures > before:
            failed_at.append(clock.seconds())
    gaps = [round(b - a) for a, b in pairwise(failed_at)]
    # Due at the first tick after MINUTE + 70 (grace 10): then 1, 2, 4, 8, 8 ... apart.
    assert gaps[:5] == [1, 2, 4, 8, 8]
    store.available = True
    clock.advance(8.5)
    assert flush.pending_count == 0 and flush.last_error is None
    store.available = False
    aggregator.add(event(MINUTE + 122), clock.seconds())
    clock.advance(120)
    first = flush.write_failures
    clock.advance(1.0)
    assert flush.write_failures == first + 1  # back to the initial 1 s delay


def test_history_waits_for_a_write_in_flight_and_sees_each_window_once() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    ticks(clock, 13)  # MINUTE+66: the totals are written, the minute is not due yet
    store.held = Deferred()
    held = store.held
    ticks(clock, 1)  # the minute is due and its write is in flight
    assert flush.pending_count == 1

    def read() -> Deferred[list[StoredMetric]]:
        return store.read_windows(60, MINUTE, MINUTE + 60, names=None, prefix=None)

    answer = Deferred.fromCoroutine(flush.history(read, 60.0, MINUTE, MINUTE + 60))
    assert not answer.called  # the lock is held by the write
    held.callback(None)
    rows, pending = result_of(answer)
    assert pending == []
    assert {row.window_start for row in rows} == {MINUTE}


def test_final_flush_closes_open_windows_once() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    flush.stopService()
    assert not flush.alive
    assert result_of(Deferred.fromCoroutine(flush.final_flush())) == 1
    assert [w.events_count for batch in store.writes for w in batch] == [1]
    assert result_of(Deferred.fromCoroutine(flush.final_flush())) == 0


def test_final_flush_reports_what_could_not_be_written() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    store.available = False
    failure = failure_of(Deferred.fromCoroutine(flush.final_flush()))
    assert failure.check(WindowsNotPersisted)
    assert "1 windows and the all-time totals not persisted" in failure.getErrorMessage()


def test_final_flush_racing_a_tick_never_writes_a_window_twice() -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    aggregator.add(event(MINUTE + 70), clock.seconds())
    flush.startService()
    store.held = Deferred()  # the tick's write will hang until released
    held = store.held
    ticks(clock, 14)  # MINUTE+71: the first minute is being written
    final = Deferred.fromCoroutine(flush.final_flush())
    assert not final.called
    held.callback(None)
    assert result_of(final) == 2  # the in-flight window was already written
    starts = written_starts(store)
    assert sorted(starts) == [MINUTE, MINUTE + 60]
    assert len(starts) == len(set(starts))


@pytest.mark.parametrize("delta", [1, 5])
def test_recent_keeps_only_normal_windows(delta: int) -> None:
    clock = Clock()
    flush, aggregator, store = setup(clock)
    aggregator.add(event(MINUTE + 2), clock.seconds())
    flush.startService()
    ticks(clock, 15)
    aggregator.add(event(MINUTE + delta), clock.seconds())  # late: its minute is closed
    ticks(clock, 1)
    assert [w.late for batch in store.writes for w in batch] == [False, True]
    assert len(flush.recently_closed()) == 1


def test_final_flush_with_nothing_counted_succeeds_even_without_a_store() -> None:
    clock = Clock()
    agg = Aggregator(window_sizes=(60.0,), grace=10.0, max_dimension_values=100, started_at=NOW)
    store = CountingStore()
    store.available = False
    never_open = StoreService(
        store, agg, clock=clock, retry_initial=1.0, retry_max=8.0, on_fatal=lambda reason: None
    )
    never_open.startService()
    flush = FlushService(
        agg,
        never_open,
        clock=clock,
        interval=5.0,
        max_pending=10,
        retry_initial=1.0,
        retry_max=8.0,
        keep_recent=10,
    )
    assert result_of(Deferred.fromCoroutine(flush.final_flush())) == 0
    agg.add(event(MINUTE), clock.seconds())  # now something would be lost
    failure = failure_of(Deferred.fromCoroutine(flush.final_flush()))
    assert failure.check(WindowsNotPersisted)

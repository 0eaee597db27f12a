"""StoreService (open with backoff, restore totals) and RetentionService."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from tests.helpers import NOW, result_of
from tests.store.helpers import batch_of
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Counter
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.events.model import Event
from twisted_rta.store.interface import NodeIdHeldError, PermanentStoreError, SchemaTooNewError
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.store.memory import MemoryWindowStore
from twisted_rta.store.retention import RetentionService


def aggregator() -> Aggregator:
    return Aggregator(
        window_sizes=(60.0, 3600.0), grace=10.0, max_dimension_values=100, started_at=NOW
    )


def service(
    store: MemoryWindowStore,
    clock: Clock,
    agg: Aggregator,
    fatal: list[str] | None = None,
    **overrides: Any,
) -> StoreService:
    settings: dict[str, Any] = {"retry_initial": 1.0, "retry_max": 4.0, "jitter": lambda: 0.0}
    settings.update(overrides)
    return StoreService(
        store, agg, clock=clock, on_fatal=(fatal if fatal is not None else []).append, **settings
    )


def test_open_restores_this_nodes_totals_into_live_metrics() -> None:
    store = MemoryWindowStore(node_id="n")
    result_of(
        store.write(batch_of([], {"total_events": Counter(value=7, count=7, updated_at=NOW - 50)}))
    )
    agg = aggregator()
    agg.add(Event(id="1", type="x", timestamp=NOW), NOW)  # counted before the restore
    svc = service(store, Clock(), agg)
    svc.startService()
    assert svc.opened
    snapshot = agg.metric("total_events")
    assert snapshot is not None and snapshot.count == 8


def test_open_retries_with_growing_backoff_until_the_store_answers() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator())
    svc.startService()
    assert not svc.opened
    assert svc.last_error == "memory store marked unavailable"
    delays = [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()]
    assert delays == [1.0]
    clock.advance(1.0)
    assert [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()] == [2.0]
    store.available = True
    clock.advance(2.0)
    assert svc.opened
    assert svc.last_error is None
    assert clock.getDelayedCalls() == []


def test_stop_cancels_a_pending_retry() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator())
    svc.startService()
    svc.stopService()
    assert clock.getDelayedCalls() == []


def test_a_newer_schema_is_fatal_and_not_retried() -> None:
    class NewerSchema(MemoryWindowStore):
        def open(self) -> Deferred[None]:
            return fail(SchemaTooNewError("database schema version 9 is newer"))

    fatal: list[str] = []
    clock = Clock()
    svc = service(NewerSchema(node_id="n"), clock, aggregator(), fatal)
    svc.startService()
    assert fatal == ["database schema version 9 is newer"]
    assert not svc.opened
    assert clock.getDelayedCalls() == []


def window(start: float, resolution: float) -> ClosedWindow:
    return ClosedWindow(
        resolution,
        start,
        start + resolution,
        {"total_events": Counter(value=1, count=1, updated_at=start)},
    )


def test_retention_deletes_only_expired_windows_per_resolution() -> None:
    store = MemoryWindowStore(node_id="n")
    result_of(
        store.write(
            batch_of(
                [window(NOW - 7200, 60.0), window(NOW - 60, 60.0), window(NOW - 7200, 3600.0)],
                {"total_events": Counter(value=3, count=3, updated_at=NOW)},
            )
        )
    )
    clock = Clock()
    clock.advance(NOW)
    svc = service(store, clock, aggregator())
    svc.startService()
    retention = RetentionService(
        svc,
        (Resolution(60.0, 3600.0), Resolution(3600.0, 86400.0)),
        clock=clock,
        interval=600.0,
        batch_size=10,
    )
    retention.startService()
    clock.advance(600.0)
    assert retention.deleted == 1
    left = result_of(store.read_windows(60, 0, NOW + 60))
    assert [row.window_start for row in left] == [NOW - 60]
    assert len(result_of(store.read_windows(3600, 0, NOW))) == 1
    assert len(result_of(store.read_totals(exclude_node=None))) == 1


def test_retention_waits_for_the_store_and_survives_failures() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator())
    svc.startService()
    retention = RetentionService(
        svc, (Resolution(60.0, 3600.0),), clock=clock, interval=10.0, batch_size=10
    )
    assert result_of(Deferred.fromCoroutine(retention.run_once())) == 0  # not open yet
    store.available = True
    clock.advance(1.0)
    assert svc.opened
    store.available = False
    assert result_of(Deferred.fromCoroutine(retention.run_once())) == 0
    assert retention.delete_failures == 1


def test_try_open_attempts_at_once_instead_of_waiting_for_the_backoff() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator())
    svc.startService()
    assert len(clock.getDelayedCalls()) == 1
    store.available = True
    assert result_of(Deferred.fromCoroutine(svc.try_open())) is True
    assert svc.opened
    assert clock.getDelayedCalls() == []


def test_try_open_joins_an_attempt_in_flight() -> None:
    class SlowOpen(MemoryWindowStore):
        def __init__(self) -> None:
            super().__init__(node_id="n")
            self.opens: list[Deferred[None]] = []

        def open(self) -> Deferred[None]:
            self.opens.append(Deferred())
            return self.opens[-1]

    store = SlowOpen()
    svc = service(store, Clock(), aggregator())
    svc.startService()
    joined = Deferred.fromCoroutine(svc.try_open())
    assert len(store.opens) == 1
    assert not joined.called
    store.opens[0].callback(None)
    assert result_of(joined) is True


def test_backoff_doubles_up_to_retry_max_and_restarts_after_a_success() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator())
    svc.startService()
    delays = []
    for _ in range(5):
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]  # retry_max 4
    store.available = True
    clock.advance(4.0)
    assert svc.opened and svc.open_failures == 6


def test_jitter_is_added_to_the_delay() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator(), jitter=lambda: 0.25)
    svc.startService()
    assert [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()] == [1.25]


def test_default_jitter_stays_within_a_tenth_of_retry_initial() -> None:
    store = MemoryWindowStore(node_id="n")
    store.available = False
    clock = Clock()
    svc = service(store, clock, aggregator(), retry_initial=2.0, jitter=None)
    svc.startService()
    (call,) = clock.getDelayedCalls()
    assert 2.0 <= call.getTime() - clock.seconds() <= 2.2


def test_a_permanent_store_error_is_fatal_once_and_try_open_gives_up() -> None:
    class HeldNodeId(MemoryWindowStore):
        def open(self) -> Deferred[None]:
            return fail(NodeIdHeldError("node id 'n' is already held"))

    fatal: list[str] = []
    clock = Clock()
    svc = service(HeldNodeId(node_id="n"), clock, aggregator(), fatal)
    svc.startService()
    assert fatal == ["node id 'n' is already held"]
    assert clock.getDelayedCalls() == []
    # The final flush at shutdown asks again: no second attempt, no second fatal.
    assert result_of(Deferred.fromCoroutine(svc.try_open())) is False
    assert fatal == ["node id 'n' is already held"]
    assert issubclass(SchemaTooNewError, PermanentStoreError)

"""Periodic and PeriodicService: ticks on the injected clock that never kill their loop."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from twisted_rta.periodic import Periodic, PeriodicService


def test_ticks_every_interval_and_records_when() -> None:
    clock = Clock()
    calls: list[float] = []
    periodic = Periodic("job", lambda: calls.append(clock.seconds()), clock=clock, interval=2.0)
    periodic.start()
    clock.advance(2.0)
    clock.advance(2.0)
    assert calls == [2.0, 4.0]
    assert periodic.ticks == 2 and periodic.last_tick_at == 4.0 and periodic.failures == 0


def test_a_raising_tick_is_counted_logged_and_the_loop_goes_on(
    captured_logs: list[dict[str, Any]],
) -> None:
    clock = Clock()
    outcomes = iter([RuntimeError("boom"), None, None])

    def tick() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    periodic = Periodic("flaky job", tick, clock=clock, interval=1.0)
    periodic.start()
    clock.advance(1.0)
    assert periodic.failures == 1 and periodic.last_error == "boom" and periodic.running
    clock.advance(1.0)
    clock.advance(1.0)
    assert periodic.ticks == 3 and periodic.failures == 1 and periodic.last_error is None
    logged = [event for event in captured_logs if event.get("job") == "flaky job"]
    assert logged and logged[0]["log_failure"].check(RuntimeError)


def test_a_failed_deferred_or_coroutine_counts_as_a_failure() -> None:
    clock = Clock()
    periodic = Periodic("deferred", lambda: fail(ValueError("bad")), clock=clock, interval=1.0)
    periodic.start()
    clock.advance(1.0)

    async def broken() -> None:
        raise KeyError("gone")

    other = Periodic("coroutine", broken, clock=clock, interval=1.0)
    other.start()
    clock.advance(1.0)
    assert periodic.failures == 2 and periodic.running
    assert other.failures == 1 and other.running


def test_waits_for_a_slow_tick_before_scheduling_the_next() -> None:
    clock = Clock()
    pending: list[Deferred[None]] = []

    def tick() -> Deferred[None]:
        pending.append(Deferred())
        return pending[-1]

    periodic = Periodic("slow", tick, clock=clock, interval=1.0)
    periodic.start()
    clock.advance(1.0)
    clock.advance(5.0)
    assert len(pending) == 1  # no second tick while the first is in flight
    clock.advance(1.5)
    pending[0].callback(None)
    assert periodic.ticks == 1 and periodic.last_duration == 6.5


def test_stop_ends_ticking_and_start_again_resumes() -> None:
    clock = Clock()
    calls: list[float] = []
    periodic = Periodic("job", lambda: calls.append(clock.seconds()), clock=clock, interval=1.0)
    periodic.start(now=True)
    periodic.stop()
    clock.advance(10.0)
    assert calls == [0.0] and not periodic.running
    periodic.start()
    clock.advance(1.0)
    assert calls == [0.0, 11.0]


class Sampler(PeriodicService):
    name = "sampler"

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock, interval=5.0)
        self.samples = 0

    def tick(self) -> None:
        self.samples += 1


def test_periodic_service_runs_from_start_to_stop() -> None:
    clock = Clock()
    sampler = Sampler(clock)
    assert not sampler.alive
    sampler.startService()
    clock.advance(5.0)
    assert sampler.alive and sampler.samples == 1 and sampler.last_tick_at == 5.0
    sampler.stopService()
    clock.advance(50.0)
    assert not sampler.alive and sampler.samples == 1
    assert sampler.periodic.name == "sampler"

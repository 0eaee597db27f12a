"""Periodic work on the injected clock: a tick that can never kill its loop.

A bare ``LoopingCall`` dies on its first exception and says so nowhere useful. Every
periodic job of the daemon (flush, retention, the load and reactor-lag monitors, the systemd
status and watchdog pings, the dashboard feed) runs through ``Periodic`` instead: the tick
may return a Deferred or a coroutine, which the loop waits for before scheduling the next;
a tick that raises or fails is caught, counted, logged with the job's name, and the loop
goes on. ``PeriodicService`` is the Service form for jobs that run from start to stop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

Tick = Callable[[], Any]


class Periodic:
    """Calls ``tick`` every ``interval`` seconds of ``clock`` while started."""

    def __init__(self, name: str, tick: Tick, *, clock: IReactorTime, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._clock = clock
        self._loop: LoopingCall | None = None
        self.ticks = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_tick_at: float | None = None  # when the last tick finished
        self.last_duration = 0.0

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    def start(self, *, now: bool = False) -> None:
        """Start ticking (``now``: the first tick at once); starting twice is a no-op."""
        if self.running:
            return
        loop = LoopingCall(self._run)
        loop.clock = self._clock
        self._loop = loop
        # _run never raises, so this errback only fires on a bug in the loop itself.
        loop.start(self.interval, now=now).addErrback(self._loop_died)

    def stop(self) -> None:
        """Stop ticking; a tick in flight finishes, no new one starts."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _run(self) -> Deferred[None] | None:
        started = self._clock.seconds()
        try:
            result = self._tick()
        except Exception:
            self._failed(Failure(), started)
            return None
        if isinstance(result, Deferred) or inspect.iscoroutine(result):
            waiting: Deferred[Any] = ensureDeferred(result)
            waiting.addCallbacks(
                lambda _: self._succeeded(started), lambda failure: self._failed(failure, started)
            )
            return waiting
        self._succeeded(started)
        return None

    def _succeeded(self, started: float) -> None:
        self._finished(started)
        self.last_error = None

    def _failed(self, failure: Failure, started: float) -> None:
        self._finished(started)
        self.failures += 1
        self.last_error = failure.getErrorMessage() or repr(failure.value)
        log.failure(
            "{job} tick failed ({failures} failures so far)",
            failure,
            job=self.name,
            failures=self.failures,
        )

    def _finished(self, started: float) -> None:
        self.ticks += 1
        self.last_tick_at = self._clock.seconds()
        self.last_duration = self.last_tick_at - started

    def _loop_died(self, failure: Failure) -> None:
        log.failure("{job} loop stopped unexpectedly", failure, job=self.name)


class PeriodicService(Service):
    """A Service whose one job is a ``Periodic`` tick from start to stop.

    Subclasses implement ``tick``; ``first_tick_now`` says whether the first tick runs at
    start or one interval later.
    """

    first_tick_now = False

    def __init__(self, *, clock: IReactorTime, interval: float) -> None:
        job = self.name or type(self).__name__
        self.periodic = Periodic(job, self.tick, clock=clock, interval=interval)

    @property
    def interval(self) -> float:
        return self.periodic.interval

    @property
    def alive(self) -> bool:
        """Whether the loop is ticking."""
        return self.periodic.running

    @property
    def failures(self) -> int:
        """Ticks that raised."""
        return self.periodic.failures

    @property
    def last_tick_at(self) -> float | None:
        return self.periodic.last_tick_at

    @property
    def last_duration(self) -> float:
        return self.periodic.last_duration

    def tick(self) -> Any:
        raise NotImplementedError

    def startService(self) -> None:
        super().startService()
        self.periodic.start(now=self.first_tick_now)

    def stopService(self) -> None:
        super().stopService()
        self.periodic.stop()

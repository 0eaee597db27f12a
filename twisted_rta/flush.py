"""FlushService: a LoopingCall that closes due windows and hands them to the window store."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.store.interface import WindowStore

log = Logger()


class FlushService(Service):
    """Every ``interval`` seconds: ``close_due(now)`` -> ``store.write``.

    A LoopingCall dies on its first exception, so each tick catches and counts its own
    failures. ``final_flush`` (called by RTAService after the workers drained) closes
    every window, open ones included, exactly once.
    """

    name = "flush"

    def __init__(
        self,
        aggregator: Aggregator,
        store: WindowStore,
        *,
        clock: IReactorTime,
        interval: float,
    ) -> None:
        self._aggregator = aggregator
        self._store = store
        self._clock = clock
        self.interval = interval
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._loop_done: Deferred[LoopingCall] | None = None
        self.ticks = 0
        self.failures = 0
        self.windows_written = 0
        self.last_tick_at: float | None = None
        self.last_duration = 0.0

    @property
    def alive(self) -> bool:
        return self._loop.running

    def startService(self) -> None:
        super().startService()
        # now=False: the first windows cannot be due yet when the daemon has just started.
        self._loop_done = self._loop.start(self.interval, now=False)
        self._loop_done.addErrback(
            lambda failure: log.failure("flush loop stopped unexpectedly", failure)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> Deferred[None]:
        return ensureDeferred(self._flush_due())

    async def _flush_due(self) -> None:
        started = self._clock.seconds()
        try:
            closed = self._aggregator.close_due(started)
            if closed:
                await self._store.write(closed)
                self.windows_written += len(closed)
        except Exception:
            self.failures += 1
            log.failure("flush tick failed ({failures} failures so far)", failures=self.failures)
        finally:
            self.ticks += 1
            self.last_tick_at = self._clock.seconds()
            self.last_duration = self.last_tick_at - started

    async def final_flush(self) -> int:
        """Close and write every window, open or not; raises if the store refuses them."""
        closed = self._aggregator.close_all(self._clock.seconds())
        if closed:
            await self._store.write(closed)
            self.windows_written += len(closed)
        return len(closed)

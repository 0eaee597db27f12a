"""ReactorLagMonitor: how late the reactor runs a periodic call (a blocked reactor shows)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall


class ReactorLagMonitor(Service):
    """Every ``interval`` seconds, records how much later than asked the call ran."""

    name = "reactor-lag"

    def __init__(
        self, *, clock: IReactorTime, interval: float, observe: Callable[[float], None]
    ) -> None:
        self._clock = clock
        self.interval = interval
        self._observe = observe
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._expected: float | None = None
        self.last_lag = 0.0

    def startService(self) -> None:
        super().startService()
        self._expected = self._clock.seconds() + self.interval
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        now = self._clock.seconds()
        expected = self._expected if self._expected is not None else now
        self.last_lag = max(0.0, now - expected)
        self._observe(self.last_lag)
        self._expected = now + self.interval

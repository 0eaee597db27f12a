"""ReactorLagMonitor: how late the reactor runs a periodic call (a blocked reactor shows)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from twisted_rta.periodic import PeriodicService


class ReactorLagMonitor(PeriodicService):
    """Every ``interval`` seconds, records how much later than asked the call ran."""

    name = "reactor-lag"

    def __init__(
        self, *, clock: IReactorTime, interval: float, observe: Callable[[float], None]
    ) -> None:
        super().__init__(clock=clock, interval=interval)
        self._clock = clock
        self._observe = observe
        self._expected: float | None = None
        self.last_lag = 0.0

    def startService(self) -> None:
        self._expected = self._clock.seconds() + self.interval
        super().startService()

    def tick(self) -> None:
        now = self._clock.seconds()
        expected = self._expected if self._expected is not None else now
        self.last_lag = max(0.0, now - expected)
        self._observe(self.last_lag)
        self._expected = now + self.interval

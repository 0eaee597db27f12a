"""NotifyService: READY once serving, WATCHDOG while the reactor turns, a STATUS line."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime

from twisted_rta.ops.status import DaemonStatus, status_line
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.periodic import Periodic


class NotifyService(Service):
    """Started last, so READY=1 means every listener is bound and the reactor runs.

    The watchdog ping comes from a periodic call: a stuck reactor stops sending it and
    systemd restarts the daemon. A reactor that runs but lags more than a watchdog interval
    behind also withholds the ping.
    """

    name = "systemd-notify"

    def __init__(
        self,
        notifier: SystemdNotifier,
        *,
        clock: IReactorTime,
        status: Callable[[float], str],
        reactor_lag: Callable[[], float],
        status_interval: float = 5.0,
    ) -> None:
        self.notifier = notifier
        self._status = status
        self._reactor_lag = reactor_lag
        self._status_interval = status_interval
        self._watchdog_interval = notifier.watchdog_interval()
        self._status_loop = Periodic(
            "systemd status", self._send_status, clock=clock, interval=status_interval
        )
        self._watchdog_loop = Periodic(
            "systemd watchdog", self._ping, clock=clock, interval=self._watchdog_interval or 1.0
        )

    def startService(self) -> None:
        super().startService()
        if not self.notifier.enabled:
            return
        self.notifier.ready(self._status(0.0))
        self._status_loop.start(now=False)
        if self._watchdog_interval is not None:
            self._watchdog_loop.start(now=True)

    def stopService(self) -> None:
        super().stopService()
        self._status_loop.stop()
        self._watchdog_loop.stop()

    def _ping(self) -> None:
        interval = self._watchdog_interval or 0.0
        if self._reactor_lag() <= interval:
            self.notifier.watchdog()

    def _send_status(self) -> None:
        self.notifier.status(self._status(self._status_interval))


class StatusLine:
    """Renders the STATUS line from a fresh status snapshot; the rate is the events
    aggregated since the previous line."""

    def __init__(self, status: Callable[[], DaemonStatus]) -> None:
        self._status = status
        self._last_aggregated = status().events_aggregated

    def render(self, elapsed: float) -> str:
        status = self._status()
        aggregated = status.events_aggregated
        rate = (aggregated - self._last_aggregated) / elapsed if elapsed > 0 else 0.0
        self._last_aggregated = aggregated
        return status_line(status, rate)

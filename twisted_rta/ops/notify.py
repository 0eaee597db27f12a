"""NotifyService: READY once serving, WATCHDOG while the reactor turns, a STATUS line."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.store.flush import FlushService


class NotifyService(Service):
    """Started last, so READY=1 means every listener is bound and the reactor runs.

    The watchdog ping comes from a LoopingCall: a stuck reactor stops sending it and
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
        self._clock = clock
        self._status = status
        self._reactor_lag = reactor_lag
        self._status_loop = LoopingCall(self._send_status)
        self._status_loop.clock = clock
        self._status_interval = status_interval
        self._watchdog_loop = LoopingCall(self._ping)
        self._watchdog_loop.clock = clock
        self._watchdog_interval = notifier.watchdog_interval()

    def startService(self) -> None:
        super().startService()
        if not self.notifier.enabled:
            return
        self.notifier.ready(self._status(0.0))
        self._status_loop.start(self._status_interval, now=False)
        if self._watchdog_interval is not None:
            self._watchdog_loop.start(self._watchdog_interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        for loop in (self._status_loop, self._watchdog_loop):
            if loop.running:
                loop.stop()

    def _ping(self) -> None:
        interval = self._watchdog_interval or 0.0
        if self._reactor_lag() <= interval:
            self.notifier.watchdog()

    def _send_status(self) -> None:
        self.notifier.status(self._status(self._status_interval))


class StatusLine:
    """The one-line STATUS for ``systemctl status``: rate, queue and store backlog."""

    def __init__(self, queue: IntakeQueue, workers: WorkerPool, flush: FlushService) -> None:
        self._queue = queue
        self._workers = workers
        self._flush = flush
        self._last_processed = workers.processed_events

    def render(self, elapsed: float) -> str:
        processed = self._workers.processed_events
        rate = (processed - self._last_processed) / elapsed if elapsed > 0 else 0.0
        self._last_processed = processed
        return (
            f"{rate:.0f} events/s, queue {self._queue.depth}/{self._queue.capacity}, "
            f"{len(self._flush.pending)} windows waiting for the store"
        )

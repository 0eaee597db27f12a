"""FlushService: a LoopingCall that closes due windows and writes them, with the all-time
totals, to the window store; failed writes stay pending and are retried with backoff."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.timefmt import iso_utc

log = Logger()


class WindowsNotPersisted(Exception):
    """The final flush could not write everything; the count says how much is lost."""


class FlushService(Service):
    """Every ``interval`` seconds: ``close_due(now)`` -> pending -> ``store.write``.

    Closed windows stay in ``pending`` until a write succeeds, so a failing store loses
    nothing (ingestion is refused with 503 once ``max_pending`` windows wait). Each write is
    one transaction with the windows and the global metrics changed since the last write.
    A LoopingCall dies on its first exception, so each tick catches and counts its own
    failures. ``lock`` is held around every write: the query layer takes it too, so a query
    never sees a window both in the store and still pending.
    """

    name = "flush"

    def __init__(
        self,
        aggregator: Aggregator,
        store_service: StoreService,
        *,
        clock: IReactorTime,
        interval: float,
        max_pending: int,
        retry_initial: float,
        retry_max: float,
        keep_recent: int,
        observe_duration: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._aggregator = aggregator
        self._store_service = store_service
        self._observe_duration = observe_duration
        self._clock = clock
        self.interval = interval
        self.max_pending = max_pending
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._retry_delay = retry_initial
        self._next_attempt_at = 0.0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        # Global metrics touched since this mark are rewritten at the next successful write.
        self._totals_mark = aggregator.started_at
        self.lock = DeferredLock()
        self.pending: list[ClosedWindow] = []
        self.recent: deque[ClosedWindow] = deque(maxlen=keep_recent)
        self.ticks = 0
        self.failures = 0
        self.write_failures = 0
        self.windows_written = 0
        self.last_error: str | None = None
        self.last_tick_at: float | None = None
        self.last_duration = 0.0

    @property
    def alive(self) -> bool:
        return self._loop.running

    @property
    def backlogged(self) -> bool:
        """True when so many windows wait for the store that ingestion must pause."""
        return len(self.pending) >= self.max_pending

    def startService(self) -> None:
        super().startService()
        # now=False: the first windows cannot be due yet when the daemon has just started.
        self._loop.start(self.interval, now=False).addErrback(
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
            self.pending.extend(self._aggregator.close_due(started))
            if self._store_service.opened and started >= self._next_attempt_at:
                await self._write_pending()
        except Exception:
            self.failures += 1
            log.failure("flush tick failed ({failures} failures so far)", failures=self.failures)
        finally:
            self.ticks += 1
            self.last_tick_at = self._clock.seconds()
            self.last_duration = self.last_tick_at - started
            self._observe_duration(self.last_duration)

    async def _write_pending(self) -> bool:
        """Write every pending window and the changed totals; False (and backoff) on failure.

        Everything from choosing what to write to dropping it from ``pending`` happens under
        the lock, so a final flush racing a tick can never write a window twice.
        """
        await self.lock.acquire()
        try:
            windows = list(self.pending)
            mark = self._clock.seconds()
            totals = self._aggregator.global_changes(self._totals_mark)
            if not windows and not totals:
                return True
            try:
                await self._store_service.store.write(windows, totals)
            except CancelledError:
                raise  # the shutdown timeout cancelled us: report that, not a store error
            except Exception as error:
                self._write_failed(error)
                return False
            del self.pending[: len(windows)]
            self._totals_mark = mark
        finally:
            self.lock.release()
        self._write_succeeded(windows)
        return True

    def _write_failed(self, error: Exception) -> None:
        self.write_failures += 1
        self.last_error = str(error) or type(error).__name__
        self._next_attempt_at = self._clock.seconds() + self._retry_delay
        log.error(
            "store write failed ({error}); {waiting} windows waiting, retrying in {delay}s",
            error=self.last_error,
            waiting=len(self.pending),
            delay=self._retry_delay,
        )
        self._retry_delay = min(self._retry_delay * 2, self._retry_max)

    def _write_succeeded(self, windows: Sequence[ClosedWindow]) -> None:
        self._retry_delay = self._retry_initial
        self._next_attempt_at = 0.0
        if self.last_error is not None:
            log.info("store writes recovered; {count} waiting windows written", count=len(windows))
        self.last_error = None
        self.windows_written += len(windows)
        self.recent.extend(window for window in windows if not window.late)
        _log_written(windows)

    async def final_flush(self) -> int:
        """Close every window, open ones included, and write everything still pending.

        Raises WindowsNotPersisted, with the count, when the store cannot take them.
        """
        self.pending.extend(self._aggregator.close_all(self._clock.seconds()))
        count = len(self.pending)
        if not await self._store_service.try_open():
            if not count and not self._aggregator.global_changes(self._totals_mark):
                return 0  # nothing was counted, so nothing is lost
            raise WindowsNotPersisted(
                f"{count} windows and the all-time totals not persisted: store never opened "
                f"({self._store_service.last_error})"
            )
        if not await self._write_pending():
            raise WindowsNotPersisted(
                f"{len(self.pending)} windows and the all-time totals not persisted: "
                f"{self.last_error}"
            )
        return count


def _log_written(windows: Sequence[ClosedWindow]) -> None:
    for window in windows:
        if window.late:
            log.info(
                "late events merged into window {start} ({resolution}s): {events} events",
                start=iso_utc(window.start),
                resolution=int(window.resolution),
                events=window.events_count,
            )
        else:
            log.info(
                "window closed: {start} to {end} ({resolution}s), {events} events, "
                "{active_users} active users",
                start=iso_utc(window.start),
                end=iso_utc(window.end),
                resolution=int(window.resolution),
                events=window.events_count,
                active_users=window.active_users,
            )

"""FlushService: a periodic tick that closes due windows and writes them, with the all-time
totals, to the window store; failed writes stay pending and are retried with backoff."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

from twisted.internet.defer import CancelledError, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.periodic import PeriodicService
from twisted_rta.store.interface import StoredMetric
from twisted_rta.store.lifecycle import StoreService, retry_policy
from twisted_rta.timefmt import iso_utc

log = Logger()


class WindowsNotPersisted(Exception):
    """The final flush could not write everything; the count says how much is lost."""


class FlushService(PeriodicService):
    """Every ``interval`` seconds: ``close_due(now)`` -> pending -> ``store.write``.

    Closed windows stay pending until a write succeeds, so a failing store loses nothing
    (ingestion is refused with 503 once ``max_pending`` windows wait); failed writes are
    retried on the store's ``retry_policy`` (twisted's backoffPolicy, jittered). Each write
    is one transaction with the windows and the global metrics changed since the last
    write. Every write happens under a lock, and ``history`` reads the store and the
    pending windows under the same lock, so a reader never sees a window both pending and
    stored.
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
        jitter: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock=clock, interval=interval)
        self._aggregator = aggregator
        self._store_service = store_service
        self._observe_duration = observe_duration
        self._clock = clock
        self.max_pending = max_pending
        self._retry_delay = retry_policy(retry_initial, retry_max, jitter)
        self._failed_attempts = 0
        self._next_attempt_at = 0.0
        # Global metrics touched since this mark are rewritten at the next successful write.
        self._totals_mark = aggregator.started_at
        self._lock = DeferredLock()
        self._pending: list[ClosedWindow] = []
        self._recent: deque[ClosedWindow] = deque(maxlen=keep_recent)
        self.write_failures = 0
        self.windows_written = 0
        self.last_error: str | None = None

    # -- the questions other parts ask -------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Closed windows waiting for the store."""
        return len(self._pending)

    @property
    def backlogged(self) -> bool:
        """True when so many windows wait for the store that ingestion must pause."""
        return len(self._pending) >= self.max_pending

    def recently_closed(self) -> list[ClosedWindow]:
        """The last ``keep_recent`` windows written on time, oldest first."""
        return list(self._recent)

    async def history(
        self,
        read: Callable[[], Awaitable[Iterable[StoredMetric]]],
        resolution: float,
        start_from: float,
        start_to: float,
    ) -> tuple[list[StoredMetric], list[ClosedWindow]]:
        """The rows ``read`` returns and the pending windows of ``resolution`` starting in
        [start_from, start_to), taken together under the write lock: a window that a write
        moves from pending to stored is seen in exactly one of the two."""
        await self._lock.acquire()
        try:
            rows = list(await read())
            pending = [
                window
                for window in self._pending
                if window.resolution == resolution and start_from <= window.start < start_to
            ]
        finally:
            self._lock.release()
        return rows, pending

    # -- the tick ------------------------------------------------------------------------

    async def tick(self) -> None:
        started = self._clock.seconds()
        try:
            self._pending.extend(self._aggregator.close_due(started))
            if self._store_service.opened and started >= self._next_attempt_at:
                await self._write_pending()
        finally:
            self._observe_duration(self._clock.seconds() - started)

    async def _write_pending(self) -> bool:
        """Write every pending window and the changed totals; False (and backoff) on failure.

        Everything from choosing what to write to dropping it from the pending list happens
        under the lock, so a final flush racing a tick can never write a window twice.
        """
        await self._lock.acquire()
        try:
            windows = list(self._pending)
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
            del self._pending[: len(windows)]
            self._totals_mark = mark
        finally:
            self._lock.release()
        self._write_succeeded(windows)
        return True

    def _write_failed(self, error: Exception) -> None:
        self.write_failures += 1
        self.last_error = str(error) or type(error).__name__
        delay = self._retry_delay(self._failed_attempts)
        self._failed_attempts += 1
        self._next_attempt_at = self._clock.seconds() + delay
        log.error(
            "store write failed ({error}); {waiting} windows waiting, retrying in {delay}s",
            error=self.last_error,
            waiting=len(self._pending),
            delay=round(delay, 3),
        )

    def _write_succeeded(self, windows: Sequence[ClosedWindow]) -> None:
        self._failed_attempts = 0
        self._next_attempt_at = 0.0
        if self.last_error is not None:
            log.info("store writes recovered; {count} waiting windows written", count=len(windows))
        self.last_error = None
        self.windows_written += len(windows)
        self._recent.extend(window for window in windows if not window.late)
        _log_written(windows)

    async def final_flush(self) -> int:
        """Close every window, open ones included, and write everything still pending.

        Raises WindowsNotPersisted, with the count, when the store cannot take them.
        """
        self._pending.extend(self._aggregator.close_all(self._clock.seconds()))
        count = len(self._pending)
        if not await self._store_service.try_open():
            if not count and not self._aggregator.global_changes(self._totals_mark):
                return 0  # nothing was counted, so nothing is lost
            raise WindowsNotPersisted(
                f"{count} windows and the all-time totals not persisted: store never opened "
                f"({self._store_service.last_error})"
            )
        if not await self._write_pending():
            raise WindowsNotPersisted(
                f"{len(self._pending)} windows and the all-time totals not persisted: "
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

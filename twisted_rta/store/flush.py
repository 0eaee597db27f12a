"""FlushService: a periodic tick that closes due windows and writes them, with the all-time
totals, to the window store; failed writes stay pending and are retried with backoff."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

from twisted.internet.defer import CancelledError, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.durability.checkpointer import Checkpointer, FlushPlan, Tagged
from twisted_rta.periodic import PeriodicService
from twisted_rta.store.interface import FlushBatch, StoredMetric
from twisted_rta.store.lifecycle import StoreService, retry_policy
from twisted_rta.timefmt import iso_utc

log = Logger()

JOURNAL_RETRY_MAX = 5.0  # seconds: the longest wait between store retries while data waits


class WindowsNotPersisted(Exception):
    """The final flush could not write everything and there is no journal: the count says
    how much is lost."""


class FlushService(PeriodicService):
    """Every ``interval`` seconds: ``close_due(now)`` -> pending -> (checkpoint) -> store.

    Closed windows stay pending until a write succeeds, so a failing store loses nothing
    (ingestion is refused with 503 once ``max_pending`` windows wait); failed writes are
    retried on the store's ``retry_policy`` (twisted's backoffPolicy, jittered). With a
    journal, each tick first takes a checkpoint (``durability/checkpointer.py``), and the
    write carries its mark, tags and this node's publication, so a crash at any instant
    neither loses nor doubles a window. Each write is one transaction. Ticks and the final
    flush run one at a time (``_flush_lock``); the write itself holds ``_write_lock``, and
    ``history`` reads the store and the pending windows under it, so a reader never sees a
    window both pending and stored.
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
        checkpointer: Checkpointer | None = None,
        pending: Sequence[Tagged] = (),
        totals_since: float | None = None,
    ) -> None:
        super().__init__(clock=clock, interval=interval)
        self._aggregator = aggregator
        self._store_service = store_service
        self._observe_duration = observe_duration
        self._clock = clock
        self._checkpointer = checkpointer
        self.max_pending = max_pending
        if checkpointer is not None:
            # Data waits in the journal while the store is down: retry it promptly.
            retry_max = min(retry_max, JOURNAL_RETRY_MAX)
        self._retry_delay = retry_policy(retry_initial, retry_max, jitter)
        self._failed_attempts = 0
        self._next_attempt_at = 0.0
        # Global metrics touched since this mark are rewritten at the next successful write.
        self._totals_mark = aggregator.started_at if totals_since is None else totals_since
        self._flush_lock = DeferredLock()
        self._write_lock = DeferredLock()
        self._pending: list[Tagged] = list(pending)
        # Recovered windows may be stored already (the crash came after the write): once the
        # store is open its mark says which, before anyone reads or writes them.
        self._unchecked_recovery = any(tag for tag, _ in self._pending)
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
        await self._write_lock.acquire()
        try:
            await self._drop_stored_recovery()
            rows = list(await read())
            pending = [
                window
                for _, window in self._pending
                if window.resolution == resolution and start_from <= window.start < start_to
            ]
        finally:
            self._write_lock.release()
        return rows, pending

    # -- the tick ------------------------------------------------------------------------

    async def tick(self) -> None:
        started = self._clock.seconds()
        await self._flush_lock.acquire()
        try:
            self._pending.extend((0, window) for window in self._aggregator.close_due(started))
            await self._drop_stored_recovery()
            plan = await self._checkpoint()
            if self._store_service.opened and started >= self._next_attempt_at:
                await self._write_pending(plan, final=False)
        finally:
            self._flush_lock.release()
            self._observe_duration(self._clock.seconds() - started)

    async def _drop_stored_recovery(self) -> None:
        """Drop the recovered pending windows the store already holds (tag <= its mark)."""
        if not self._unchecked_recovery or not self._store_service.opened:
            return
        try:
            mark = await self._store_service.store.read_mark()
        except Exception as error:
            log.warn("reading the store's mark failed: {error}", error=str(error))
            return  # tried again at the next read or tick
        self._unchecked_recovery = False
        kept = [(tag, window) for tag, window in self._pending if not 0 < tag <= mark]
        if len(kept) < len(self._pending):
            log.info(
                "{count} recovered windows were already stored (mark {mark})",
                count=len(self._pending) - len(kept),
                mark=mark,
            )
        self._pending = kept

    async def _checkpoint(self) -> FlushPlan | None:
        if self._checkpointer is None:
            return None
        plan, self._pending = await self._checkpointer.take(self._pending)
        return plan

    async def _write_pending(self, plan: FlushPlan | None, *, final: bool) -> bool:
        """Write every pending window and the changed totals; False (and backoff) on failure.

        Everything from choosing what to write to dropping it from the pending list happens
        under the write lock, so a query never sees a window both pending and stored.
        """
        await self._write_lock.acquire()
        try:
            windows = list(self._pending)
            mark = self._clock.seconds()
            totals = self._aggregator.global_changes(self._totals_mark)
            if not windows and not totals and plan is None:
                return True
            batch = FlushBatch(
                windows=windows,
                totals=totals,
                mark=plan.mark if plan is not None else None,
                # At the final flush every window is closed: nothing live to publish.
                publication=plan.publication if plan is not None and not final else None,
                published_at=plan.taken_at if plan is not None else mark,
            )
            try:
                await self._store_service.store.write(batch)
            except CancelledError:
                raise  # the shutdown timeout cancelled us: report that, not a store error
            except Exception as error:
                self._write_failed(error)
                return False
            del self._pending[: len(windows)]
            self._totals_mark = mark
        finally:
            self._write_lock.release()
        self._write_succeeded([window for _, window in windows])
        if plan is not None and self._checkpointer is not None:
            self._checkpointer.stored(plan)
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

    async def final_flush(self, deadline: float | None = None) -> int:
        """Close every window, open ones included, and write everything still pending.

        With a journal, the closed windows are checkpointed first and the write is retried
        until ``deadline`` (clock time): what the store still refuses then is safe in the
        checkpoint and written at the next start. Without one, raises WindowsNotPersisted,
        with the count, when the store cannot take them.
        """
        await self._flush_lock.acquire()
        try:
            return await self._final_flush(deadline)
        finally:
            self._flush_lock.release()

    async def _final_flush(self, deadline: float | None) -> int:
        self._pending.extend((0, w) for w in self._aggregator.close_all(self._clock.seconds()))
        count = len(self._pending)
        plan = await self._checkpoint()
        while True:
            if await self._store_service.try_open() and await self._write_pending(plan, final=True):
                return count
            retry_at = max(self._next_attempt_at, self._clock.seconds() + 0.1)
            if plan is None or deadline is None or retry_at >= deadline:
                break
            await deferLater(self._clock, retry_at - self._clock.seconds(), lambda: None)
        if plan is not None:
            log.warn(
                "the store did not take {count} windows and the all-time totals before the "
                "shutdown deadline ({error}); they are safe in checkpoint {mark} and the journal "
                "and are written at the next start",
                count=len(self._pending),
                error=self.last_error or self._store_service.last_error,
                mark=plan.mark,
            )
            return count - len(self._pending)
        if not count and not self._aggregator.global_changes(self._totals_mark):
            return 0  # nothing was counted, so nothing is lost
        raise WindowsNotPersisted(
            f"{len(self._pending)} windows and the all-time totals not persisted: "
            f"{self.last_error or self._store_service.last_error}"
        )


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

"""StoreService: opens the store (retrying with backoff) and restores all-time totals."""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.store.interface import PermanentStoreError, WindowStore

log = Logger()


def retry_policy(
    retry_initial: float, retry_max: float, jitter: Callable[[], float] | None = None
) -> Callable[[int], float]:
    """Delay before retry ``attempt`` (0, 1, ...): twisted's backoffPolicy doubling from
    ``retry_initial`` to ``retry_max``, plus a jitter of at most a tenth of
    ``retry_initial`` (by default) so that nodes failing together do not retry in step.
    Both store retry paths, opening and writing, use it."""
    if jitter is None:
        jitter = lambda: random.uniform(0.0, retry_initial / 10)  # noqa: E731
    return backoffPolicy(initialDelay=retry_initial, maxDelay=retry_max, factor=2.0, jitter=jitter)


class StoreService(Service):
    """Started first: until the store is open the daemon still takes events (they wait in
    memory, bounded), and /ready says why it is not ready. Restored totals are merged into
    the live global metrics, so events counted before the restore are kept.

    A PermanentStoreError (no such database, wrong credentials, no privilege, node id held
    by another process, newer schema) is fatal at once; anything else is retried with
    exponential backoff from ``retry_initial`` to ``retry_max``, plus a jitter of at most a
    tenth of ``retry_initial`` so that nodes restarted together do not retry in step.
    """

    name = "store"

    def __init__(
        self,
        store: WindowStore,
        aggregator: Aggregator,
        *,
        clock: IReactorTime,
        retry_initial: float,
        retry_max: float,
        on_fatal: Callable[[str], None],
        jitter: Callable[[], float] | None = None,
        restore_totals: bool = True,
    ) -> None:
        self._restore_totals = restore_totals  # False: a checkpoint already holds them
        self.store = store
        self._aggregator = aggregator
        self._clock = clock
        self._backoff = retry_policy(retry_initial, retry_max, jitter)
        self._on_fatal = on_fatal
        self._retry: IDelayedCall | None = None
        self._waiters: list[Deferred[None]] = []
        self.opened = False
        self.open_failures = 0
        self.last_error: str | None = None
        self.fatal_error: str | None = None
        self._failed_attempts = 0  # since the last success: the backoff's exponent

    def startService(self) -> None:
        super().startService()
        self._attempt()

    def stopService(self) -> None:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _attempt(self) -> Deferred[None]:
        """Open and restore; a call while an attempt is in flight joins it."""
        self._retry = None
        done: Deferred[None] = Deferred()
        self._waiters.append(done)
        if len(self._waiters) == 1:
            opening = self.store.open()
            opening.addCallback(lambda _: self.store.load_totals() if self._restore_totals else {})
            opening.addCallbacks(self._restore, self._failed)
            opening.addBoth(self._attempt_done)
        return done

    def _attempt_done(self, result: object) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def try_open(self) -> bool:
        """One more attempt now (the final flush at shutdown must not wait for backoff).

        Joins an attempt already in flight; returns whether the store is open.
        """
        if self.opened:
            return True
        if self.fatal_error is not None:
            return False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        await self._attempt()
        return self.opened

    def _restore(self, totals: dict[str, Metric]) -> None:
        for name, metric in totals.items():
            try:
                self._aggregator.restore_global(name, metric)
            except TypeError as error:
                # A metric rule now makes this name as another kind: its stored history
                # stays in the store, the live metric starts afresh.
                log.warn(
                    "stored total {name} not restored: {error} (the metric rules changed its "
                    "kind; rename the rule to keep both)",
                    name=name,
                    error=str(error),
                )
        self.opened = True
        self.last_error = None
        self._failed_attempts = 0
        log.info(
            "store open (node {node_id}); restored {count} all-time metrics",
            node_id=self.store.node_id,
            count=len(totals),
        )

    def _failed(self, failure: Failure) -> None:
        reason = failure.getErrorMessage() or getattr(failure.type, "__name__", "error")
        self.last_error = reason
        if failure.check(PermanentStoreError):
            if self.fatal_error is None:
                self.fatal_error = reason
                log.critical("cannot start: {reason}", reason=reason)
                self._on_fatal(reason)
            return
        delay = self._backoff(self._failed_attempts)
        self._failed_attempts += 1
        self.open_failures += 1
        if not self.running:
            return
        log.warn(
            "store unavailable ({reason}); retrying in {delay}s",
            reason=reason,
            delay=round(delay, 3),
        )
        self._retry = self._clock.callLater(delay, self._attempt)

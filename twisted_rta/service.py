"""RTAService: the daemon's MultiService, with an explicitly ordered shutdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from twisted_rta.durability.opening import Durability
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool
from twisted_rta.ops.status import Lifecycle
from twisted_rta.store.flush import FlushService
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.store.retention import RetentionService
from twisted_rta.web.listeners import HTTPListener

log = Logger()


class RTAService(MultiService):
    """Starts store -> flush -> retention -> workers -> listeners; stops in the order
    DESIGN.md 3 gives.

    ``MultiService.stopService`` would stop children concurrently, which could flush
    before the queue is drained; here every step waits for the previous one.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        queue: IntakeQueue,
        store_service: StoreService,
        flush: FlushService,
        retention: RetentionService,
        workers: WorkerPool,
        listeners: Sequence[HTTPListener],
        lifecycle: Lifecycle,
        shutdown_timeout: float,
        monitors: Sequence[Service] = (),
        notify: Service | None = None,
        on_stopping: Callable[[], None] = lambda: None,
        log_observer: ILogObserver | None = None,
        shutdown_errors: list[str] | None = None,
        durability: Durability | None = None,
    ) -> None:
        super().__init__()
        self.durability = durability
        self.clock = clock
        self.queue = queue
        self.store_service = store_service
        self.flush = flush
        self.retention = retention
        self.workers = workers
        self.listeners = tuple(listeners)
        self.shutdown_timeout = shutdown_timeout
        self.log_observer = log_observer
        self.lifecycle = lifecycle
        self._stop_deadline = 0.0
        # Shared with the composition root, which turns any entry into exit status 1.
        self.shutdown_errors = shutdown_errors if shutdown_errors is not None else []
        self.monitors = tuple(monitors)
        self._on_stopping = on_stopping
        # The notifier comes last so that READY=1 follows the listeners being bound.
        self.notify = notify
        tail = (notify,) if notify is not None else ()
        for child in (
            store_service,
            flush,
            retention,
            *self.monitors,
            workers,
            *self.listeners,
            *tail,
        ):
            child.setServiceParent(self)

    def setServiceParent(self, parent: IServiceCollection) -> None:
        super().setServiceParent(parent)
        # twistd asks its Application for an ILogObserver before starting to log; this is
        # the one hook through which a plugin can choose the format and level filter.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)

    def startService(self) -> None:
        self.lifecycle.started_at = self.clock.seconds()
        if self.durability is not None:
            self.durability.start()
        super().startService()
        log.info(
            "rta ready: {count} listener(s) on {addresses}",
            count=len(self.listeners),
            addresses=", ".join(listener.address for listener in self.listeners),
        )

    def stopService(self) -> Deferred[None]:
        self.lifecycle.stopping = True
        self._stop_deadline = self.clock.seconds() + self.shutdown_timeout
        Service.stopService(self)
        stopping = ensureDeferred(self._stop_in_order())
        stopping.addTimeout(self.shutdown_timeout, self.clock)
        return stopping.addErrback(self._shutdown_failed)

    async def _stop_in_order(self) -> None:
        log.info("shutdown 1/5: stop listening")
        await DeferredList([ensureDeferred(_stop(listener)) for listener in self.listeners])
        self._on_stopping()  # STOPPING=1 to systemd
        # Keep-alive connections may still send requests: refuse them from now on.
        self.queue.close()
        log.info("shutdown 2/5: draining {depth} queued events", depth=self.queue.depth)
        await _stop(self.workers)
        log.info("shutdown 3/5: stop the flush and retention loops")
        await _stop(self.flush)
        await _stop(self.retention)
        for monitor in (*self.monitors, *((self.notify,) if self.notify else ())):
            await _stop(monitor)
        try:
            log.info("shutdown 4/5: final flush of every window")
            # Retried until shortly before the timeout; with a journal, what the store did
            # not take by then is safe in the last checkpoint.
            margin = min(1.0, self.shutdown_timeout / 5)
            written = await self.flush.final_flush(deadline=self._stop_deadline - margin)
            log.info("final flush wrote {windows} windows", windows=written)
        finally:
            if self.durability is not None:
                await self.durability.close()
            log.info("shutdown 5/5: closing the store")
            await _stop(self.store_service)
            await self.store_service.store.close()
        log.info("shutdown complete")

    def _shutdown_failed(self, failure: Failure) -> None:
        if failure.check(TimeoutError):
            reason = (
                f"shutdown did not finish within {self.shutdown_timeout:g}s; "
                f"{self.flush.pending_count} windows not written to the store"
                + (" (safe in the journal)" if self.durability is not None else "")
            )
        else:
            reason = f"shutdown step failed: {failure.getErrorMessage()}"
        self.shutdown_errors.append(reason)
        log.failure("{reason}", failure, reason=reason)


async def _stop(service: Service) -> None:
    result = service.stopService()
    if isinstance(result, Deferred):
        await result

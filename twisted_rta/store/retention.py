"""RetentionService: deletes stored windows older than each resolution's retention."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.store.lifecycle import StoreService

log = Logger()


class RetentionService(Service):
    """Every ``interval``: bounded batches of deletes per resolution, in the store's pool."""

    name = "retention"

    def __init__(
        self,
        store_service: StoreService,
        resolutions: Sequence[Resolution],
        *,
        clock: IReactorTime,
        interval: float,
        batch_size: int,
    ) -> None:
        self._store_service = store_service
        self._resolutions = tuple(resolutions)
        self._clock = clock
        self._batch_size = batch_size
        self.interval = interval
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self.deleted = 0
        self.failures = 0

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False).addErrback(
            lambda failure: log.failure("retention loop stopped", failure)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> Deferred[None]:
        return ensureDeferred(self.run_once())

    async def run_once(self) -> int:
        if not self._store_service.opened:
            return 0
        now = self._clock.seconds()
        deleted = 0
        for resolution in self._resolutions:
            try:
                deleted += await self._store_service.store.delete_expired(
                    int(resolution.size), now - resolution.retention, self._batch_size
                )
            except Exception:
                self.failures += 1
                log.failure("retention of {size}s windows failed", size=resolution.size)
        if deleted:
            log.info("retention deleted {rows} expired rows", rows=deleted)
        self.deleted += deleted
        return deleted

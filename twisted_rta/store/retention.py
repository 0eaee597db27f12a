"""RetentionService: deletes stored windows older than each resolution's retention."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.periodic import PeriodicService
from twisted_rta.store.lifecycle import StoreService

log = Logger()


class RetentionService(PeriodicService):
    """Every ``interval``: bounded batches of deletes per resolution, in the store's pool.

    A resolution whose delete fails is counted in ``delete_failures`` and tried again at the
    next tick; the other resolutions still run."""

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
        super().__init__(clock=clock, interval=interval)
        self._store_service = store_service
        self._resolutions = tuple(resolutions)
        self._clock = clock
        self._batch_size = batch_size
        self.deleted = 0
        self.delete_failures = 0

    async def tick(self) -> None:
        await self.run_once()

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
                self.delete_failures += 1
                log.failure("retention of {size}s windows failed", size=resolution.size)
        if deleted:
            log.info("retention deleted {rows} expired rows", rows=deleted)
        self.deleted += deleted
        return deleted

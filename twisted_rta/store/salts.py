"""SaltRotation: the visitor salts of the previous, current and next periods, kept in the
store (shared by every node) and handed to the browser endpoints' ``VisitorIds``; salts
of older periods are deleted."""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.periodic import PeriodicService
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.web.visitors import VisitorIds

log = Logger()
SALT_BYTES = 32
# How often the salts are read: often enough that a new node, or a store back from an
# outage, has them soon; the next period's salt is made in advance, so a boundary never
# waits for this.
MAX_INTERVAL = 60.0


def salt_interval(period: float) -> float:
    return min(MAX_INTERVAL, period / 4)


class SaltRotation(PeriodicService):
    """Every ``salt_interval(period)`` (and at start): make sure the store has salts for
    the previous, current and next periods (the first node to ask makes each), give them
    to ``visitors``, and delete the ones before."""

    name = "visitor salts"
    first_tick_now = True

    def __init__(
        self,
        store_service: StoreService,
        visitors: VisitorIds,
        *,
        clock: IReactorTime,
        new_salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
    ) -> None:
        super().__init__(clock=clock, interval=salt_interval(visitors.period))
        self._store_service = store_service
        self.visitors = visitors
        self._clock = clock
        self._new_salt = new_salt
        self.deleted = 0

    async def tick(self) -> None:
        await self.refresh()

    async def refresh(self) -> bool:
        """One round now; False while the store is not open (the endpoints answer 503
        until a round has succeeded)."""
        # At start this joins the store's first opening instead of waiting a whole interval.
        if not self._store_service.opened and not await self._store_service.try_open():
            return False
        now = self._clock.seconds()
        period = int(self.visitors.period)
        current = int(now - now % period)
        starts = [current - period, current, current + period]
        store = self._store_service.store
        salts = await store.visitor_salts(starts, self._new_salt, now)
        self.visitors.use_salts(salts)
        deleted = await store.delete_visitor_salts(current - period)
        if deleted:
            log.info("deleted {count} expired visitor salts", count=deleted)
        self.deleted += deleted
        return True

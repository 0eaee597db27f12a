"""WorkerPool: cooperative loops that move batches from the intake queue into the aggregator."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.ingest.queue import Accepted, IntakeQueue

log = Logger()


class WorkerPool(Service):
    """``worker_count`` loops sharing one Cooperator, so a big batch never freezes the reactor.

    Each batch is aggregated in slices of ``slice_size`` events; between slices the
    cooperator hands the reactor back (its time budget per tick is ~10 ms), which keeps
    ``/health`` answering while large batches are processed. A pass takes the request it
    waited for and the ones already waiting behind it: at most ``coalesce_requests`` requests
    in all (``processing.coalesce_requests``), and no more once ``coalesce_events`` events
    are taken.
    """

    name = "workers"

    def __init__(
        self,
        queue: IntakeQueue,
        aggregator: Aggregator,
        *,
        clock: IReactorTime,
        worker_count: int,
        slice_size: int = 200,
        coalesce_events: int = 1000,
        coalesce_requests: int = 1000,
        cooperator: Cooperator | None = None,
        on_applied: Callable[[int], None] = lambda seq: None,
    ) -> None:
        self._queue = queue
        self._aggregator = aggregator
        self._clock = clock
        self.worker_count = worker_count
        self._slice_size = slice_size
        self._coalesce_events = coalesce_events
        self._coalesce_requests = coalesce_requests
        self._cooperator = cooperator or Cooperator(
            scheduler=lambda work: clock.callLater(0, work), started=False
        )
        self._on_applied = on_applied  # tells the journal's progress which records are in
        self._loops: list[Deferred[None]] = []
        self._waiting: dict[int, Deferred[Accepted]] = {}
        self.busy = 0
        self.processed_events = 0
        self.batches_processed = 0
        self.busy_seconds = 0.0
        self.failed_batches = 0

    @property
    def alive(self) -> int:
        """Number of loops still running (readiness checks it)."""
        return sum(1 for loop in self._loops if not loop.called)

    def startService(self) -> None:
        super().startService()
        self._cooperator.start()
        self._loops = [ensureDeferred(self._run(index)) for index in range(self.worker_count)]
        log.info("started {count} workers", count=self.worker_count)

    async def _run(self, index: int) -> None:
        while self.running:
            waiting = self._queue.get()
            self._waiting[index] = waiting
            try:
                first = await waiting
            except CancelledError:
                return
            finally:
                self._waiting.pop(index, None)
            # One pass over many small requests: the per-batch costs (a cooperative task, the
            # aggregator's batch summary) are paid once, not per request.
            items = [
                first,
                *self._queue.take_ready(
                    self._coalesce_events - len(first.events), self._coalesce_requests - 1
                ),
            ]
            self.busy += 1
            try:
                await self._cooperator.cooperate(self._steps(items)).whenDone()
                self.batches_processed += 1
            except Exception:
                # A bad batch must not kill the loop; the events were validated, so this
                # is a bug worth a loud log line, not a reason to stop aggregating.
                self.failed_batches += 1
                log.failure("worker {index} failed to aggregate a batch", index=index)
            finally:
                self.busy -= 1

    def _steps(self, items: Sequence[Accepted]) -> Iterator[None]:
        """Whole requests per step, about ``slice_size`` events each (a larger request is one
        step): a checkpoint between two steps never holds part of a request."""
        step: list[Accepted] = []
        count = 0
        for item in items:
            step.append(item)
            count += len(item.events)
            if count >= self._slice_size:
                self._apply(step)
                step, count = [], 0
                yield None
        if step:
            self._apply(step)
            yield None

    def _apply(self, items: Sequence[Accepted]) -> None:
        events = (
            items[0].events
            if len(items) == 1
            else [event for item in items for event in item.events]
        )
        began = self._clock.seconds()
        try:
            self._aggregator.add_many(events, began)
        finally:
            # Even a failing request counts as applied: it would fail again on replay.
            for item in items:
                self._on_applied(item.seq)
            self.busy_seconds += self._clock.seconds() - began
        self.processed_events += len(events)

    def stopService(self) -> Deferred[None]:
        """Stop taking work, let running batches finish, then drain what is still queued."""
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        for waiting in list(self._waiting.values()):
            waiting.cancel()
        await DeferredList(self._loops, consumeErrors=True)
        self._cooperator.stop()
        drained = 0
        for item in self._queue.take_all():
            self._apply((item,))
            drained += len(item.events)
        log.info("workers stopped; drained {drained} queued events", drained=drained)

"""WorkerPool: cooperative loops that move batches from the intake queue into the aggregator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.events.model import Event
from twisted_rta.ingest.queue import IntakeQueue

log = Logger()


class WorkerPool(Service):
    """``worker_count`` loops sharing one Cooperator, so a big batch never freezes the reactor.

    Each batch is aggregated in slices of ``slice_size`` events; between slices the
    cooperator hands the reactor back (its time budget per tick is ~10 ms), which keeps
    ``/health`` answering while large batches are processed.
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
        cooperator: Cooperator | None = None,
    ) -> None:
        self._queue = queue
        self._aggregator = aggregator
        self._clock = clock
        self.worker_count = worker_count
        self._slice_size = slice_size
        self._coalesce_events = coalesce_events
        self._cooperator = cooperator or Cooperator(
            scheduler=lambda work: clock.callLater(0, work), started=False
        )
        self._loops: list[Deferred[None]] = []
        self._waiting: dict[int, Deferred[Sequence[Event]]] = {}
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
                batch = await waiting
            except CancelledError:
                return
            finally:
                self._waiting.pop(index, None)
            ready = self._queue.take_ready(self._coalesce_events - len(batch))
            if ready:
                # One pass over many small requests: the per-batch costs (a cooperative
                # task, the aggregator's batch summary) are paid once, not per request.
                batch = [event for part in (batch, *ready) for event in part]
            self.busy += 1
            try:
                await self._cooperator.cooperate(self._slices(batch)).whenDone()
                self.batches_processed += 1
            except Exception:
                # A bad batch must not kill the loop; the events were validated, so this
                # is a bug worth a loud log line, not a reason to stop aggregating.
                self.failed_batches += 1
                log.failure("worker {index} failed to aggregate a batch", index=index)
            finally:
                self.busy -= 1

    def _slices(self, batch: Sequence[Event]) -> Iterator[None]:
        for start in range(0, len(batch), self._slice_size):
            chunk = batch[start : start + self._slice_size]
            began = self._clock.seconds()
            self._aggregator.add_many(chunk, began)
            self.busy_seconds += self._clock.seconds() - began
            self.processed_events += len(chunk)
            yield None

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
        for batch in self._queue.take_all():
            self._aggregator.add_many(batch, self._clock.seconds())
            drained += len(batch)
        self.processed_events += drained
        log.info("workers stopped; drained {drained} queued events", drained=drained)

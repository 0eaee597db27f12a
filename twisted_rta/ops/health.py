"""Readiness: real checks of the running parts, each with its figure (read by /ready)."""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from twisted_rta.service import RTAService

QUEUE_LIMIT = 0.9  # share of the intake queue in use above which we stop being ready
LOAD_LIMIT = 0.7  # share of each flush interval spent flushing plus aggregating
STALE_TICKS = 2  # flush intervals without a tick before the flush loop counts as stuck


@frozen
class Check:
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "failing", "detail": self.detail}


@frozen
class Readiness:
    ready: bool
    checks: dict[str, Check]

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {name: check.as_dict() for name, check in self.checks.items()}


class LoadMonitor(Service):
    """Every flush interval: the share of it spent flushing plus aggregating."""

    name = "load"

    def __init__(
        self,
        *,
        clock: IReactorTime,
        interval: float,
        busy_seconds: Callable[[], float],
        flush_seconds: Callable[[], float],
    ) -> None:
        self.interval = interval
        self._busy_seconds = busy_seconds
        self._flush_seconds = flush_seconds
        self._last_busy = 0.0
        self._loop = LoopingCall(self._sample)
        self._loop.clock = clock
        self.load = 0.0

    def startService(self) -> None:
        super().startService()
        self._last_busy = self._busy_seconds()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _sample(self) -> None:
        busy = self._busy_seconds()
        self.load = (busy - self._last_busy + self._flush_seconds()) / self.interval
        self._last_busy = busy


def check_readiness(service: RTAService, load: LoadMonitor, now: float) -> Readiness:
    checks = {
        "shutdown": Check(not service.stopping, "shutting down" if service.stopping else "running"),
        "listening": _listening(service),
        "workers": _workers(service),
        "queue": _queue(service),
        "load": _load(load),
        "flush": _flush(service, now),
        "store": _store(service),
    }
    return Readiness(all(check.ok for check in checks.values()), checks)


def _listening(service: RTAService) -> Check:
    unbound = [listener.description for listener in service.listeners if listener.port is None]
    bound = len(service.listeners) - len(unbound)
    detail = f"{bound} of {len(service.listeners)} listeners bound"
    return Check(
        not unbound, detail + (f"; not listening on {', '.join(unbound)}" if unbound else "")
    )


def _workers(service: RTAService) -> Check:
    workers = service.workers
    running = workers.alive if workers.running else 0
    return Check(
        running == workers.worker_count, f"{running} of {workers.worker_count} workers running"
    )


def _queue(service: RTAService) -> Check:
    queue = service.queue
    share = queue.depth / queue.capacity
    return Check(
        share <= QUEUE_LIMIT,
        f"{queue.depth} of {queue.capacity} events queued ({share:.0%}; limit {QUEUE_LIMIT:.0%})",
    )


def _load(load: LoadMonitor) -> Check:
    return Check(
        load.load <= LOAD_LIMIT,
        f"{load.load:.0%} of the last flush interval spent flushing and aggregating "
        f"(limit {LOAD_LIMIT:.0%})",
    )


def _flush(service: RTAService, now: float) -> Check:
    flush = service.flush
    if not flush.alive:
        return Check(False, "flush loop not running")
    last = flush.last_tick_at if flush.last_tick_at is not None else service.started_at
    stale_after = STALE_TICKS * flush.interval
    age = now - last if last is not None else float("inf")
    return Check(age <= stale_after, f"last tick {age:.1f}s ago (limit {stale_after:g}s)")


def _store(service: RTAService) -> Check:
    store = service.store_service
    flush = service.flush
    if not store.opened:
        return Check(False, f"not open: {store.last_error or 'opening'}")
    if flush.last_error is not None:
        return Check(
            False, f"writes failing: {flush.last_error}; {len(flush.pending)} windows waiting"
        )
    return Check(True, f"open; {len(flush.pending)} windows waiting")

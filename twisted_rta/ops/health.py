"""Readiness: real checks of the running parts, each with its figure (read by /ready)."""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from twisted_rta.ops.status import DaemonStatus
from twisted_rta.periodic import PeriodicService

QUEUE_LIMIT = 0.9  # share of the intake queue in use above which we stop being ready
LOAD_LIMIT = 0.7  # share of each flush interval spent flushing plus aggregating
JOURNAL_LIMIT = 0.9  # share of journal.max_bytes in use above which we stop being ready
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


class LoadMonitor(PeriodicService):
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
        super().__init__(clock=clock, interval=interval)
        self._busy_seconds = busy_seconds
        self._flush_seconds = flush_seconds
        self._last_busy = 0.0
        self.load = 0.0

    def startService(self) -> None:
        self._last_busy = self._busy_seconds()
        super().startService()

    def tick(self) -> None:
        busy = self._busy_seconds()
        self.load = (busy - self._last_busy + self._flush_seconds()) / self.interval
        self._last_busy = busy


def readiness_of(status: DaemonStatus) -> Readiness:
    """Each check of the running parts with its figure, from one status snapshot."""
    checks = {
        "shutdown": Check(not status.stopping, "shutting down" if status.stopping else "running"),
        "listening": _listening(status),
        "workers": _workers(status),
        "queue": _queue(status),
        "load": _load(status),
        "flush": _flush(status),
        "store": _store(status),
        "journal": _journal(status),
    }
    return Readiness(all(check.ok for check in checks.values()), checks)


def _listening(status: DaemonStatus) -> Check:
    unbound = [endpoint for endpoint, address in status.listeners if address is None]
    detail = f"{len(status.listeners) - len(unbound)} of {len(status.listeners)} listeners bound"
    if unbound:
        return Check(False, f"{detail}; not listening on {', '.join(unbound)}")
    return Check(True, detail)


def _workers(status: DaemonStatus) -> Check:
    return Check(
        status.workers_alive == status.worker_count,
        f"{status.workers_alive} of {status.worker_count} workers running",
    )


def _queue(status: DaemonStatus) -> Check:
    share = status.queue_depth / status.queue_capacity
    return Check(
        share <= QUEUE_LIMIT,
        f"{status.queue_depth} of {status.queue_capacity} events queued ({share:.0%}; "
        f"limit {QUEUE_LIMIT:.0%})",
    )


def _load(status: DaemonStatus) -> Check:
    return Check(
        status.load <= LOAD_LIMIT,
        f"{status.load:.0%} of the last flush interval spent flushing and aggregating "
        f"(limit {LOAD_LIMIT:.0%})",
    )


def _flush(status: DaemonStatus) -> Check:
    if not status.flush_running:
        return Check(False, "flush loop not running")
    last = status.last_flush_at if status.last_flush_at is not None else status.started_at
    stale_after = STALE_TICKS * status.flush_interval
    age = status.time - last if last is not None else float("inf")
    return Check(age <= stale_after, f"last tick {age:.1f}s ago (limit {stale_after:g}s)")


def _store(status: DaemonStatus) -> Check:
    waiting = status.pending_windows
    if not status.store_open:
        return Check(False, f"not open: {status.store_error or 'opening'}")
    if status.last_write_error is not None:
        return Check(False, f"writes failing: {status.last_write_error}; {waiting} windows waiting")
    return Check(True, f"open; {waiting} windows waiting")


def _journal(status: DaemonStatus) -> Check:
    journal = status.journal
    if journal is None:
        return Check(True, "off: a crash loses what the store does not hold yet")
    share = journal.bytes / journal.max_bytes
    oldest = journal.oldest_unstored_age
    detail = (
        f"{journal.bytes} of {journal.max_bytes} bytes ({share:.0%}; limit {JOURNAL_LIMIT:.0%}); "
        + (
            "everything acknowledged is stored"
            if oldest is None
            else f"oldest unstored {oldest:.0f}s"
        )
    )
    stale_after = STALE_TICKS * status.flush_interval
    if journal.checkpoint_age is not None and journal.checkpoint_age > stale_after:
        return Check(False, f"last checkpoint {journal.checkpoint_age:.1f}s ago; {detail}")
    if journal.fsync_failures:
        return Check(False, f"{journal.fsync_failures} fsyncs failed; {detail}")
    return Check(share <= JOURNAL_LIMIT, detail)

"""One status snapshot of the running daemon, assembled in one place.

``/api/v1/stats``, ``/ready``, ``/metrics``, the systemd STATUS line and the dashboard's
health panel all read a ``DaemonStatus``: a frozen value taken on the reactor thread, so the
five never disagree about the queue, the pending windows, the last flush or the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field, frozen

from twisted_rta.aggregation.aggregator import Aggregator, AggregatorStats
from twisted_rta.durability.opening import Durability
from twisted_rta.ingest.dedup import RecentIds
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool
from twisted_rta.store.flush import FlushService
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.store.retention import RetentionService
from twisted_rta.web.browser import BrowserDrops


@define
class Lifecycle:
    """How far the daemon's start and stop sequence has gone; written by RTAService only."""

    started_at: float | None = None
    stopping: bool = False


@define
class ListenerState:
    """One configured listen endpoint and, while it is bound, its address; written by the
    HTTPListener that binds it."""

    description: str
    address: str | None = None


@define
class ConnectionCounts:
    """HTTP connections ended or refused by the daemon since its start, on every port;
    written by the sites and the fast lane that share it."""

    refused: int = 0  # over server.max_connections
    slow_requests: int = 0  # aborted: a request not received within server.request_timeout
    slow_readers: int = 0  # aborted: a response not taken within server.write_timeout


@frozen
class JournalStatus:
    """The journal and the last checkpoint: how much acknowledged data is not in the store."""

    bytes: int
    max_bytes: int
    oldest_unstored_age: float | None  # seconds; None when the store holds everything
    checkpoint_age: float | None  # seconds since the last checkpoint; None before the first
    fsync_failures: int


@frozen
class DedupStatus:
    """The recent event ids (ingest/dedup.py)."""

    ids: int
    max_ids: int
    evicted: int  # forgotten before the horizon because max_ids was reached
    oldest_age: float  # seconds: the horizon in effect (shorter than asked after evictions)


@frozen
class DaemonStatus:
    """Everything an operator-facing view says about this node, at one instant."""

    time: float
    node_id: str
    started_at: float | None
    stopping: bool
    listeners: tuple[tuple[str, str | None], ...]  # (endpoint, bound address or None)
    queue_depth: int
    queue_capacity: int
    worker_count: int
    workers_alive: int
    events_aggregated: int
    batches_processed: int
    worker_busy_seconds: float
    worker_failed_batches: int
    flush_running: bool
    flush_interval: float
    last_flush_at: float | None
    flush_failures: int
    pending_windows: int
    windows_written: int
    write_failures: int
    last_write_error: str | None
    store_open: bool
    store_error: str | None
    store_open_failures: int
    retention_failures: int
    load: float
    aggregation: AggregatorStats
    journal: JournalStatus | None = None  # None: journal.enabled is false
    dedup: DedupStatus | None = None  # None: dedup.enabled is false
    # Browser events answered 202 and not counted, by reason (bot, dnt), since the start.
    browser_dropped: Mapping[str, int] = field(factory=dict)
    connections_refused: int = 0
    slow_requests: int = 0
    slow_readers: int = 0

    @property
    def uptime_seconds(self) -> float:
        return self.aggregation.uptime_seconds


@frozen
class StatusSource:
    """Takes a ``DaemonStatus`` from the running parts; reads only."""

    aggregator: Aggregator
    queue: IntakeQueue
    workers: WorkerPool
    flush: FlushService
    store_service: StoreService
    retention: RetentionService
    lifecycle: Lifecycle
    listeners: tuple[ListenerState, ...]
    load: Any  # LoadMonitor: anything with a ``load`` share
    durability: Durability | None = None
    browser_drops: BrowserDrops | None = None
    recent_ids: RecentIds | None = None
    connections: ConnectionCounts | None = None

    def snapshot(self, now: float) -> DaemonStatus:
        workers, flush, store = self.workers, self.flush, self.store_service
        return DaemonStatus(
            time=now,
            node_id=store.store.node_id,
            started_at=self.lifecycle.started_at,
            stopping=self.lifecycle.stopping,
            listeners=tuple((state.description, state.address) for state in self.listeners),
            queue_depth=self.queue.depth,
            queue_capacity=self.queue.capacity,
            worker_count=workers.worker_count,
            workers_alive=workers.alive if workers.running else 0,
            events_aggregated=workers.processed_events,
            batches_processed=workers.batches_processed,
            worker_busy_seconds=workers.busy_seconds,
            worker_failed_batches=workers.failed_batches,
            flush_running=flush.alive,
            flush_interval=flush.interval,
            last_flush_at=flush.last_tick_at,
            flush_failures=flush.failures,
            pending_windows=flush.pending_count,
            windows_written=flush.windows_written,
            write_failures=flush.write_failures,
            last_write_error=flush.last_error,
            store_open=store.opened,
            store_error=store.last_error,
            store_open_failures=store.open_failures,
            retention_failures=self.retention.delete_failures + self.retention.failures,
            load=float(self.load.load),
            aggregation=self.aggregator.stats(now),
            journal=self._journal(now),
            browser_dropped=dict(self.browser_drops.counts) if self.browser_drops else {},
            dedup=self._dedup(now),
            **self._connections(),
        )

    def _connections(self) -> dict[str, int]:
        counts = self.connections or ConnectionCounts()
        return {
            "connections_refused": counts.refused,
            "slow_requests": counts.slow_requests,
            "slow_readers": counts.slow_readers,
        }

    def _dedup(self, now: float) -> DedupStatus | None:
        recent = self.recent_ids
        if recent is None:
            return None
        return DedupStatus(recent.count, recent.max_ids, recent.evicted, recent.oldest_age(now))

    def _journal(self, now: float) -> JournalStatus | None:
        durability = self.durability
        if durability is None:
            return None
        journal = durability.journal
        oldest = journal.oldest_unreleased_at()
        checkpoint_at = durability.checkpointer.last_checkpoint_at
        return JournalStatus(
            bytes=journal.size_bytes,
            max_bytes=journal.max_bytes,
            oldest_unstored_age=None if oldest is None else max(0.0, now - oldest),
            checkpoint_age=None if checkpoint_at is None else max(0.0, now - checkpoint_at),
            fsync_failures=journal.fsync_failures,
        )


def stats_view(status: DaemonStatus) -> dict[str, Any]:
    """The ``/api/v1/stats`` data (the Go service's keys plus ours)."""
    aggregation = status.aggregation
    return {
        "total_events": aggregation.total_events,
        "unique_users": aggregation.unique_users,
        "unique_sessions": aggregation.unique_sessions,
        "metrics_count": aggregation.metrics_count,
        "active_windows": aggregation.active_windows,
        "late_events": aggregation.late_events,
        "dimension_overflow": aggregation.dimension_overflow,
        "overflow_by_metric": dict(sorted(aggregation.dimension_overflow_by_base.items())),
        "rule_skips": _skips_by_rule(aggregation.rule_skips),
        "events_dropped": aggregation.events_dropped,
        "browser_events_dropped": dict(sorted(status.browser_dropped.items())),
        "queue_depth": status.queue_depth,
        "queue_capacity": status.queue_capacity,
        "pending_windows": status.pending_windows,
        "node_id": status.node_id,
        "uptime_seconds": round(status.uptime_seconds, 3),
        "journal": None
        if status.journal is None
        else {
            "bytes": status.journal.bytes,
            "max_bytes": status.journal.max_bytes,
            "oldest_unstored_seconds": _rounded(status.journal.oldest_unstored_age),
            "checkpoint_age_seconds": _rounded(status.journal.checkpoint_age),
        },
    }


def _skips_by_rule(skips: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    by_rule: dict[str, dict[str, int]] = {}
    for (rule, reason), count in sorted(skips.items()):
        by_rule.setdefault(rule, {})[reason] = count
    return by_rule


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def status_line(status: DaemonStatus, events_per_second: float) -> str:
    """The one-line STATUS for ``systemctl status``: rate, queue and store backlog."""
    return (
        f"{events_per_second:.0f} events/s, queue {status.queue_depth}/{status.queue_capacity}, "
        f"{status.pending_windows} windows waiting for the store"
    )

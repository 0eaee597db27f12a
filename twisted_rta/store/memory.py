"""RecentWindowStore: logs each closed window and keeps the last N in memory for queries."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.logs import iso_utc

log = Logger()


class RecentWindowStore:
    """The in-memory WindowStore: nothing survives a restart (the storage issue adds that).

    Late deltas are merged into the window they belong to, so a closed minute is reported
    once and its counts still include events that arrived after it closed.
    """

    def __init__(self, *, keep: int) -> None:
        self._keep = keep
        self._windows: dict[tuple[float, float], ClosedWindow] = {}

    def write(self, windows: Sequence[ClosedWindow]) -> Deferred[None]:
        for window in windows:
            if window.late:
                self._merge_late(window)
            else:
                self._remember(window)
                log.info(
                    "window closed: {start} to {end}, {events} events, {active_users} active users",
                    start=iso_utc(window.start), end=iso_utc(window.end),
                    events=window.events_count, active_users=window.active_users,
                    resolution=window.resolution,
                )
        self._evict()
        return succeed(None)

    def recent(self) -> Sequence[ClosedWindow]:
        return [self._windows[key] for key in sorted(self._windows, key=lambda k: (k[1], k[0]))]

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _remember(self, window: ClosedWindow) -> None:
        # Own a private dict so later late-delta merges never touch the caller's mapping.
        self._windows[(window.resolution, window.start)] = attrs.evolve(
            window, metrics=dict(window.metrics)
        )

    def _merge_late(self, delta: ClosedWindow) -> None:
        stored = self._windows.get((delta.resolution, delta.start))
        log.info(
            "late events for closed window {start}: {events} events merged",
            start=iso_utc(delta.start), events=delta.events_count, resolution=delta.resolution,
        )
        if stored is None:
            self._remember(attrs.evolve(delta, late=False))
            return
        metrics = stored.metrics
        assert isinstance(metrics, dict)
        for name, metric in delta.metrics.items():
            if name in metrics:
                metrics[name].merge(metric)
            else:
                metrics[name] = metric

    def _evict(self) -> None:
        excess = len(self._windows) - self._keep
        if excess > 0:
            oldest = sorted(self._windows, key=lambda key: (key[1], key[0]))[:excess]
            for key in oldest:
                del self._windows[key]

"""The live figures the dashboard shows and the Server-Sent Events feed that pushes them to
every open page."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from twisted_rta.aggregation.metrics import Counter, Histogram, Metric, Unique
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.ops.health import readiness_of
from twisted_rta.ops.status import DaemonStatus
from twisted_rta.periodic import Periodic
from twisted_rta.query.labels import rank_value
from twisted_rta.query.service import QueryService, StoreUnavailable, tidy_number
from twisted_rta.query.timerange import choose_resolution
from twisted_rta.query.web import PAGEVIEWS, SITE, VISITORS, site_selection
from twisted_rta.timefmt import iso_utc
from twisted_rta.web.responses import encode_json

log = Logger()

TOTAL_NAMES = (
    "total_events",
    "pageviews",
    "clicks",
    "purchases",
    "revenue",
    "revenue_histogram",
    "unique_users",
    "unique_sessions",
)
RATE_SPAN = 10.0  # seconds of samples behind "events/s now": smooths per-flush totals of peers
RECENT_SPAN = 300.0  # "active users" and the short-term event rate look at the last 5 minutes
SLOW_REFRESH = 15.0  # the day and hour uniques merge up to 1440 windows: not every tick
# The web figures (per site, over RECENT_SPAN) are "visitors now" for every page at once,
# and the change signal that tells a page when to fetch its site's panels for its range.
SITES_NOW = 50  # the most sites the stream names (the page's site picker lists as many)
ALL = 2**31  # a breakdown limit no family's series reach


def _sum(windows: dict[float, dict[str, Metric]], name: str) -> float:
    total = 0.0
    for metrics in windows.values():
        metric = metrics.get(name)
        if isinstance(metric, Counter):
            total += metric.value
    return total


def _union(windows: dict[float, dict[str, Metric]], name: str) -> int:
    merged: Unique | None = None
    for metrics in windows.values():
        metric = metrics.get(name)
        if isinstance(metric, Unique):
            if merged is None:
                merged = metric  # windows_in hands out copies the caller owns
            else:
                merged.merge(metric)
    return merged.estimate if merged is not None else 0


@define
class LiveFigures:
    """Builds the compact update the stream sends: all-time totals, recent rates and
    uniques, and the node's health. Runs on the reactor thread; history reads go through
    the query layer (store reads in its thread pool)."""

    query: QueryService
    status: Callable[[float], DaemonStatus]
    clock: IReactorTime
    resolutions: tuple[Resolution, ...]
    _samples: deque[tuple[float, float]] = field(factory=lambda: deque(maxlen=64))
    _slow: dict[str, Any] = field(factory=dict)
    _slow_at: float | None = None

    async def snapshot(self) -> dict[str, Any]:
        now = self.clock.seconds()
        totals, complete = await self.query.totals(names=TOTAL_NAMES)
        figures: dict[str, Any] = {"time": iso_utc(now), "complete": complete}
        for name in TOTAL_NAMES:
            metric = totals.get(name)
            if isinstance(metric, Unique):
                figures[name] = metric.estimate
            elif metric is not None and not isinstance(metric, Histogram):
                figures[name] = tidy_number(metric.value)
            else:
                figures[name] = 0
        histogram = totals.get("revenue_histogram")
        snapshot = histogram.snapshot("revenue_histogram") if histogram is not None else None
        figures["revenue_histogram"] = {
            "count": snapshot.count if snapshot else 0,
            "p50": snapshot.p50 if snapshot else None,
            "p95": snapshot.p95 if snapshot else None,
            "p99": snapshot.p99 if snapshot else None,
        }
        figures["events_per_second"] = self._rate(now, float(figures["total_events"]))
        figures.update(await self._recent(now))
        if self._slow_at is None or now - self._slow_at >= SLOW_REFRESH:
            self._slow = await self._uniques_today_and_hour(now)
            self._slow_at = now
        figures.update(self._slow)
        figures["web_now"] = await self._web_now(now)
        figures["health"] = self._health(now)
        return figures

    def _rate(self, now: float, total: float) -> float | None:
        """Events per second over the last ~RATE_SPAN seconds of samples."""
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_SPAN:
            self._samples.popleft()
        start, first = self._samples[0]
        if now - start <= 0:
            return None
        return round(max(total - first, 0.0) / (now - start), 3)

    async def _recent(self, now: float) -> dict[str, Any]:
        timerange = choose_resolution(now - RECENT_SPAN, now, now=now, resolutions=self.resolutions)
        try:
            windows = await self.query.windows_in(timerange, names=["total_events", "unique_users"])
        except StoreUnavailable:
            return {"events_per_second_5m": None, "active_users_5m": None}
        span = max(now - timerange.start_from, 1.0)
        return {
            "events_per_second_5m": round(_sum(windows, "total_events") / span, 3),
            "active_users_5m": _union(windows, "unique_users"),
        }

    async def _web_now(self, now: float) -> dict[str, Any] | None:
        """Visitors and pageviews of the last RECENT_SPAN seconds, in all and per site (the
        SITES_NOW sites with most visitors, in that order); None when the rules have no
        per-site ``visitors`` and ``site_pageviews`` (``metrics.web: false``)."""
        rules = self.query.aggregator.rules
        visitors_of, pageviews_of = (site_selection(rules, n) for n in (VISITORS, PAGEVIEWS))
        if visitors_of is None or pageviews_of is None:
            return None
        timerange = choose_resolution(now - RECENT_SPAN, now, now=now, resolutions=self.resolutions)
        try:
            visitors, _ = await self.query.breakdown_by(visitors_of, SITE, timerange, SITES_NOW)
            # Every site's pageviews (the tally groups them all anyway): a site among the
            # most visited need not be among the most viewed.
            pageviews, _ = await self.query.breakdown_by(pageviews_of, SITE, timerange, ALL)
        except StoreUnavailable:
            return {"visitors": None, "pageviews": None, "sites": {}}
        sites = {
            site: {"visitors": int(rank_value(metric)), "pageviews": 0}
            for site, metric in visitors.items
        }
        for site, metric in pageviews.items:
            if site in sites:
                sites[site]["pageviews"] = tidy_number(rank_value(metric))
        return {
            "visitors": int(rank_value(visitors.total)),
            "pageviews": tidy_number(rank_value(pageviews.total)),
            "sites": sites,
        }

    async def _uniques_today_and_hour(self, now: float) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for label, start in (("today", now - now % 86400), ("hour", now - 3600)):
            timerange = choose_resolution(start, now, now=now, resolutions=self.resolutions)
            try:
                windows = await self.query.windows_in(
                    timerange, names=["unique_users", "unique_sessions"]
                )
            except StoreUnavailable:
                figures[f"unique_users_{label}"] = figures[f"unique_sessions_{label}"] = None
                continue
            figures[f"unique_users_{label}"] = _union(windows, "unique_users")
            figures[f"unique_sessions_{label}"] = _union(windows, "unique_sessions")
        return figures

    def _health(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        readiness = readiness_of(status)
        last_tick = status.last_flush_at
        return {
            "ready": readiness.ready,
            "failing": sorted(name for name, check in readiness.checks.items() if not check.ok),
            "queue_depth": status.queue_depth,
            "queue_capacity": status.queue_capacity,
            "pending_windows": status.pending_windows,
            "last_flush": iso_utc(last_tick) if last_tick is not None else None,
            "node_id": status.node_id,
            "uptime_seconds": round(status.uptime_seconds, 3),
        }


class LiveFeed(Service):
    """Open event streams and the loop that feeds them: one snapshot per period, built once
    and written to every subscriber. The loop runs only while someone is subscribed."""

    name = "dashboard-feed"

    def __init__(
        self,
        *,
        clock: IReactorTime,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        period: float = 2.0,
    ) -> None:
        self._snapshot = snapshot
        self.period = period
        self.subscribers: set[Request] = set()
        self._last: bytes | None = None
        self._loop = Periodic("dashboard feed", self._send, clock=clock, interval=period)

    @property
    def ticking(self) -> bool:
        """Whether the loop is ticking (only while someone is subscribed)."""
        return self._loop.running

    @property
    def failures(self) -> int:
        """Snapshots that failed (the page keeps its last figures)."""
        return self._loop.failures

    def subscribe(self, request: Request) -> None:
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"X-Accel-Buffering", b"no")  # proxies must not buffer the stream
        request.write(b"retry: 3000\n\n")  # sends the head now; reconnect delay for the page
        self.subscribers.add(request)
        request.notifyFinish().addBoth(lambda _: self._drop(request))
        if self._last is not None:
            request.write(self._last)  # the page fills at once instead of after a period
        self._loop.start(now=True)

    def _drop(self, request: Request) -> None:
        self.subscribers.discard(request)
        if not self.subscribers:
            self._loop.stop()
            self._last = None  # a stale snapshot must not greet the next page

    async def _send(self) -> None:
        payload = await self._snapshot()
        self._last = b"data: " + encode_json(payload) + b"\n\n"
        for request in list(self.subscribers):
            request.write(self._last)

    def stopService(self) -> None:
        super().stopService()
        self._loop.stop()
        # Open streams would hold their connections past shutdown: end them now.
        for request in list(self.subscribers):
            request.finish()
        self.subscribers.clear()

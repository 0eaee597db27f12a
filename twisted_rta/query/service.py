"""The query layer: live aggregator state and stored history merged, across every node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Counter, Metric, MetricSnapshot
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.aggregation.windows import WindowSnapshot
from twisted_rta.ops.status import DaemonStatus, stats_view
from twisted_rta.query.peers import PeerWindows
from twisted_rta.query.timerange import TimeRange
from twisted_rta.store.flush import FlushService
from twisted_rta.store.interface import StoredMetric
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.timefmt import iso_utc

log = Logger()
OTHER = "__other__"


class StoreUnavailable(Exception):
    """History was asked for while the store cannot answer."""


def tidy_number(value: Any) -> Any:
    """Integral floats print as integers (``1010``, not ``1010.0``) like the Go service did."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def metric_view(snapshot: MetricSnapshot) -> dict[str, Any]:
    view = snapshot.as_dict(iso_utc)
    for key in ("value", "sum", "min", "max"):
        if key in view:
            view[key] = tidy_number(view[key])
    return view


def window_view(window: WindowSnapshot) -> dict[str, Any]:
    return {
        "resolution_seconds": tidy_number(window.resolution),
        "start": iso_utc(window.start),
        "end": iso_utc(window.end),
        "closed": window.closed,
        "metrics": {name: metric_view(snapshot) for name, snapshot in window.metrics.items()},
    }


def range_view(timerange: TimeRange) -> dict[str, Any]:
    view: dict[str, Any] = {
        "from": iso_utc(timerange.start_from),
        "to": iso_utc(timerange.start_to),
        "resolution_seconds": tidy_number(timerange.resolution.size),
        "complete": timerange.complete,
    }
    if not timerange.complete:
        view["note"] = (
            f"the range starts before the {tidy_number(timerange.resolution.retention)}s "
            "retention of this resolution; only the data still kept is included"
        )
    return view


def _merge_into(target: dict[str, Metric], name: str, metric: Metric) -> None:
    """``target`` owns its metrics; ``metric`` must be a copy the caller may give away."""
    existing = target.get(name)
    if existing is None:
        target[name] = metric
        return
    try:
        existing.merge(metric)  # type: ignore[arg-type]
    except TypeError:
        log.warn("metric {name} has different kinds across nodes; skipping one", name=name)


def _wanted(name: str, names: Sequence[str] | None, prefix: str | None) -> bool:
    return (names is None or name in names) and (prefix is None or name.startswith(prefix))


@frozen
class Breakdown:
    items: list[tuple[str, float]]
    other: float
    total: float


def breakdown_of(base: str, metrics: Mapping[str, Metric], limit: int) -> Breakdown:
    """Top ``limit`` dimension values of ``base`` by value, the rest folded into ``other``."""
    prefix = base + ":"
    values = [
        (name[len(prefix) :], metric.value)
        for name, metric in metrics.items()
        if name.startswith(prefix) and isinstance(metric, Counter)
    ]
    kept_other = sum(value for key, value in values if key == OTHER)
    ranked = sorted(((k, v) for k, v in values if k != OTHER), key=lambda kv: (-kv[1], kv[0]))
    top, rest = ranked[:limit], ranked[limit:]
    other = kept_other + sum(value for _, value in rest)
    return Breakdown(top, other, sum(value for _, value in top) + other)


@frozen
class QueryService:
    """Reads only. Live state is read synchronously on the reactor thread (a consistent
    snapshot); history comes through the flush service, which reads the store and its
    pending windows together, so a window is never seen both pending and stored."""

    aggregator: Aggregator
    flush: FlushService
    store_service: StoreService
    resolutions: tuple[Resolution, ...]
    status: Callable[[float], DaemonStatus]
    peers: PeerWindows | None = None  # None: no other node's live windows (no journal)

    @property
    def node_id(self) -> str:
        return self.store_service.store.node_id

    # -- all-time --------------------------------------------------------------------------

    async def totals(
        self, *, names: Sequence[str] | None = None, prefix: str | None = None
    ) -> tuple[dict[str, Metric], bool]:
        """All-time metrics of this node (live) merged with every other node's stored
        totals; the flag is False when other nodes could not be read."""
        merged = self.aggregator.global_metric_copies(names=names, prefix=prefix)
        try:
            rows = await self._store_read(
                lambda store: store.read_totals(
                    exclude_node=self.node_id, names=names, prefix=prefix
                )
            )
        except StoreUnavailable:
            return merged, False
        for row in rows:
            _merge_into(merged, row.metric, row.value)
        return merged, True

    async def metrics(self, prefix: str | None = None) -> tuple[dict[str, dict[str, Any]], bool]:
        merged, complete = await self.totals(prefix=prefix)
        views = {name: metric_view(merged[name].snapshot(name)) for name in sorted(merged)}
        return views, complete

    async def metric(self, name: str) -> dict[str, Any] | None:
        merged, _ = await self.totals(names=[name])
        metric = merged.get(name)
        return None if metric is None else metric_view(metric.snapshot(name))

    # -- ranges ----------------------------------------------------------------------------

    async def windows_in(
        self,
        timerange: TimeRange,
        *,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> dict[float, dict[str, Metric]]:
        """Every window of the range's resolution: stored rows of all nodes, this node's
        pending (unwritten) windows and its live ones, and the other nodes' live windows
        from their last publication, merged per window start."""
        size = timerange.resolution.size
        start_from, start_to = timerange.start_from, timerange.start_to
        by_start: dict[float, dict[str, Metric]] = {}
        rows, pending = await self.flush.history(
            lambda: self._store_read(
                lambda store: store.read_windows(
                    int(size), start_from, start_to, names=names, prefix=prefix
                )
            ),
            size,
            start_from,
            start_to,
        )
        for row in rows:
            _merge_into(by_start.setdefault(float(row.window_start), {}), row.metric, row.value)
        for window in pending:
            self._merge_metrics(
                by_start.setdefault(window.start, {}), window.metrics.items(), names, prefix
            )
        live = self.aggregator.live_windows(size, start_from, start_to)
        peers = await self._peer_windows(size, start_from, start_to)
        for windows in (live, *peers):
            for start, metrics in windows.items():
                self._merge_metrics(
                    by_start.setdefault(start, {}), metrics.items(), names, prefix, owned=True
                )
        return {start: by_start[start] for start in sorted(by_start) if by_start[start]}

    async def metric_over(self, name: str, timerange: TimeRange) -> Metric | None:
        """The metric merged over the windows of the range; an empty metric of its kind
        when it is known (some node has it all-time) but the range holds none of it; None
        when no node knows it."""
        windows = await self.windows_in(timerange, names=[name])
        merged: dict[str, Metric] = {}
        for metrics in windows.values():
            if name in metrics:
                _merge_into(merged, name, metrics[name])
        found = merged.get(name)
        if found is not None:
            return found
        known, _ = await self.totals(names=[name])
        existing = known.get(name)
        return None if existing is None else type(existing)()  # empty, of the same kind

    async def series(self, name: str, timerange: TimeRange) -> list[dict[str, Any]]:
        windows = await self.windows_in(timerange, names=[name])
        return [
            {"start": iso_utc(start), "metric": metric_view(metrics[name].snapshot(name))}
            for start, metrics in windows.items()
            if name in metrics
        ]

    async def breakdown(
        self, base: str, timerange: TimeRange | None, limit: int
    ) -> tuple[Breakdown, bool] | None:
        """The top values of the family ``base`` (all-time, or over the range) and whether
        every node could be read; None when the family is unknown: the rules declare no
        such family and no node has a metric ``<base>:<value>``. A known family with no
        data (in the range) has no items."""
        prefix = base + ":"
        declared = base in self.aggregator.rules.dimension_bases()
        if timerange is None:
            merged, complete = await self.totals(prefix=prefix)
            if not declared and not merged:
                return None
            return breakdown_of(base, merged, limit), complete
        merged = {}
        for metrics in (await self.windows_in(timerange, prefix=prefix)).values():
            for name, metric in metrics.items():
                _merge_into(merged, name, metric)
        if not declared and not merged:
            seen, _ = await self.totals(prefix=prefix)
            if not seen:
                return None
        return breakdown_of(base, merged, limit), True

    # -- this node -------------------------------------------------------------------------

    def stats(self, now: float) -> dict[str, Any]:
        """This node's figures for ``/api/v1/stats``, from the one status snapshot."""
        return stats_view(self.status(now))

    def windows(self) -> list[dict[str, Any]]:
        closed = [window.snapshot() for window in self.flush.recently_closed()]
        open_ = self.aggregator.open_windows()
        return [window_view(window) for window in [*closed, *open_]]

    # -- helpers ---------------------------------------------------------------------------

    async def _peer_windows(
        self, size: float, start_from: float, start_to: float
    ) -> list[dict[float, dict[str, Metric]]]:
        if self.peers is None:
            return []
        try:
            return await self.peers.live_windows(size, start_from, start_to)
        except Exception as error:
            log.warn("reading other nodes' publications failed: {error}", error=str(error))
            raise StoreUnavailable(f"store read failed: {error}") from error

    async def _store_read(self, read: Any) -> list[StoredMetric]:
        if not self.store_service.opened:
            raise StoreUnavailable(f"store not open: {self.store_service.last_error}")
        try:
            return list(await read(self.store_service.store))
        except Exception as error:
            log.warn("store read failed: {error}", error=str(error))
            raise StoreUnavailable(f"store read failed: {error}") from error

    @staticmethod
    def _merge_metrics(
        target: dict[str, Metric],
        metrics: Iterable[tuple[str, Metric]],
        names: Sequence[str] | None,
        prefix: str | None,
        *,
        owned: bool = False,
    ) -> None:
        for name, metric in metrics:
            if _wanted(name, names, prefix):
                _merge_into(target, name, metric if owned else metric.copy())

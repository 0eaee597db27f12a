"""How query answers show metrics, windows and ranges: JSON-ready dicts, keys in API order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted_rta.aggregation.metrics import Counter, Gauge, Metric, MetricSnapshot
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.aggregation.windows import WindowSnapshot
from twisted_rta.query.figures import Figure, SlidingFigures
from twisted_rta.query.sliding import SlidingPoint
from twisted_rta.query.timerange import TimeRange
from twisted_rta.timefmt import iso_utc


def tidy_number(value: Any) -> Any:
    """Integral floats print as integers (``1010``, not ``1010.0``) like the Go service did."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def metric_view(
    snapshot: MetricSnapshot, format_time: Callable[[float], str] = iso_utc
) -> dict[str, Any]:
    view = snapshot.as_dict(format_time)
    for key in ("value", "sum", "min", "max"):
        if key in view:
            view[key] = tidy_number(view[key])
    return view


def metric_view_of(
    name: str, metric: Metric, format_time: Callable[[float], str] = iso_utc
) -> dict[str, Any]:
    """``metric_view(metric.snapshot(name))``, built directly for counters and gauges: the
    metric list builds tens of thousands, and the snapshot was most of their cost."""
    if isinstance(metric, Counter | Gauge):
        return {
            "name": name,
            "type": metric.kind,
            "value": tidy_number(metric.value),
            "count": metric.count,
            "timestamp": format_time(metric.updated_at),
        }
    return metric_view(metric.snapshot(name), format_time)


def memo_time_format() -> Callable[[float], str]:
    """``iso_utc`` remembering its answers: the metrics one batch touched share its time,
    so one answer formats a few distinct instants thousands of times."""
    known: dict[float, str] = {}

    def format_time(timestamp: float) -> str:
        text = known.get(timestamp)
        if text is None:
            text = known[timestamp] = iso_utc(timestamp)
        return text

    return format_time


def window_view(
    window: WindowSnapshot,
    *,
    figures: Mapping[str, Figure] | None = None,
    aliases: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A window with its metrics, each ``(alias, name)`` of ``aliases`` listed again under
    the alias (the same view, named so), and its ``figures`` (none by default)."""
    metrics = {name: metric_view(snapshot) for name, snapshot in window.metrics.items()}
    for alias, name in aliases:
        metrics[alias] = {**metrics[name], "name": alias}
    return {
        "resolution_seconds": tidy_number(window.resolution),
        "start": iso_utc(window.start),
        "end": iso_utc(window.end),
        "closed": window.closed,
        "metrics": {name: metrics[name] for name in sorted(metrics)},
        "figures": {name: tidy_number(value) for name, value in (figures or {}).items()},
    }


def sliding_view(spec: SlidingFigures, point: SlidingPoint | None, end: float) -> dict[str, Any]:
    """A sliding window's latest span ending at ``end``: its figures, or each null when
    they could not be read (``point`` None)."""
    figures = point.figures if point is not None else dict.fromkeys(spec.figures)
    return {
        "size_seconds": tidy_number(spec.size),
        "step_seconds": tidy_number(spec.step),
        "start": iso_utc(end - spec.size),
        "end": iso_utc(end),
        "figures": {name: tidy_number(value) for name, value in figures.items()},
    }


def sliding_point_view(point: SlidingPoint) -> dict[str, Any]:
    return {
        "start": iso_utc(point.start),
        "end": iso_utc(point.end),
        "figures": {name: tidy_number(value) for name, value in point.figures.items()},
    }


def range_view(timerange: TimeRange) -> dict[str, Any]:
    view: dict[str, Any] = {
        "from": iso_utc(timerange.start_from),
        "to": iso_utc(timerange.start_to),
        "resolution_seconds": tidy_number(timerange.resolution.size),
        "complete": timerange.complete,
    }
    if not timerange.complete:
        view["note"] = range_note(timerange.resolution)
    return view


def range_note(resolution: Resolution) -> str:
    """Why a range is not complete."""
    return (
        f"the range starts before the {tidy_number(resolution.retention)}s "
        "retention of this resolution; only the data still kept is included"
    )

"""Merging one metric from several sources (nodes, windows, stored rows) into an owned target."""

from __future__ import annotations

from twisted.logger import Logger

from twisted_rta.aggregation.metrics import Metric

log = Logger()


def merge_into(target: dict[str, Metric], name: str, metric: Metric) -> None:
    """``target`` owns its metrics; ``metric`` must be a copy the caller may give away."""
    existing = target.get(name)
    if existing is None:
        target[name] = metric
        return
    try:
        existing.merge(metric)  # type: ignore[arg-type]
    except TypeError:
        log.warn("metric {name} has different kinds across nodes; skipping one", name=name)

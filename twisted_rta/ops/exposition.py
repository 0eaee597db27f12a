"""Prometheus exposition: the daemon's state and its analytics metrics as metric families.

Read at scrape time on the reactor thread from one status snapshot (ops/status.py), so a
scrape is consistent and agrees with /ready and /api/v1/stats. The
analytics metrics are this node's all-time values (Prometheus adds the instance label;
sum counters across nodes in PromQL, but never sum unique counts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

from attrs import frozen
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample

from twisted_rta.aggregation.metrics import MetricSnapshot
from twisted_rta.aggregation.rules import OTHER, Family, Rules, parse_series_key
from twisted_rta.ops.status import DaemonStatus

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99"))


def metric_name(name: str) -> str:
    """``rta_`` plus the name with anything Prometheus does not allow replaced by ``_``."""
    return "rta_" + _INVALID.sub("_", name)


@frozen(eq=False)  # the registry keys collectors by identity
class DaemonCollector:
    """A prometheus_client collector over one status snapshot and this node's metrics.

    ``reserved``: the family names of the daemon's other collectors (telemetry); with the
    collector's own, an analytics metric never takes one (see ``analytics_families``).
    """

    status: Callable[[], DaemonStatus]
    analytics: Callable[[], Mapping[str, MetricSnapshot]]
    rules: Rules
    reserved: frozenset[str] = frozenset()

    def collect(self) -> Iterator[Metric]:
        own = list(self_metrics(self.status()))
        yield from own
        reserved = self.reserved | {family.name for family in own}
        yield from analytics_families(self.analytics(), self.rules, reserved)


def self_metrics(status: DaemonStatus) -> Iterator[Metric]:
    """The daemon's own state as metric families."""
    aggregation = status.aggregation
    yield _gauge("rta_queue_depth", "Events waiting in the intake queue", status.queue_depth)
    yield _gauge(
        "rta_queue_capacity", "Capacity of the intake queue in events", status.queue_capacity
    )
    yield _counter(
        "rta_batches_processed",
        "Queued batches aggregated by the workers",
        status.batches_processed,
    )
    yield _counter(
        "rta_events_aggregated", "Events aggregated by the workers", status.events_aggregated
    )
    yield _counter(
        "rta_worker_busy_seconds", "Time the workers spent aggregating", status.worker_busy_seconds
    )
    yield _counter(
        "rta_worker_failed_batches",
        "Batches whose aggregation raised",
        status.worker_failed_batches,
    )
    yield _gauge("rta_windows_open", "Open windows at every resolution", aggregation.active_windows)
    yield _counter(
        "rta_windows_written", "Closed windows written to the store", status.windows_written
    )
    yield _gauge(
        "rta_windows_pending", "Closed windows waiting to be written", status.pending_windows
    )
    errors = CounterMetricFamily(
        "rta_store_errors", "Failed store operations", labels=["operation"]
    )
    errors.add_metric(["write"], status.write_failures)
    errors.add_metric(["open"], status.store_open_failures)
    errors.add_metric(["retention"], status.retention_failures)
    yield errors
    yield _counter("rta_flush_tick_failures", "Flush ticks that raised", status.flush_failures)
    yield _gauge("rta_store_open", "1 when the window store is open", int(status.store_open))
    yield _counter(
        "rta_late_events", "Events for windows that had already closed", aggregation.late_events
    )
    overflow = CounterMetricFamily(
        "rta_dimension_overflow", "Events counted under <base>:__other__", labels=["base"]
    )
    for base, count in sorted(aggregation.dimension_overflow_by_base.items()):
        overflow.add_metric([base], count)
    yield overflow
    skips = CounterMetricFamily(
        "rta_rule_skips",
        "Events a metric rule's metrics skipped: a field or label absent, null or mistyped",
        labels=["rule", "reason"],
    )
    for (rule, reason), count in sorted(aggregation.rule_skips.items()):
        skips.add_metric([rule, reason], count)
    yield skips
    dropped = CounterMetricFamily(
        "rta_events_dropped",
        "Events not aggregated: by a drop rule, or browser events of crawlers (bot) or "
        "with Do Not Track (dnt), answered 202",
        labels=["reason"],
    )
    dropped.add_metric(["rule"], aggregation.events_dropped)
    for reason, count in sorted(status.browser_dropped.items()):
        dropped.add_metric([reason], count)
    yield dropped
    yield _gauge("rta_uptime_seconds", "Seconds since the daemon started", status.uptime_seconds)
    yield _counter(
        "rta_http_connections_refused",
        "Connections closed at once: server.max_connections were open",
        status.connections_refused,
    )
    aborted = CounterMetricFamily(
        "rta_http_connections_aborted",
        "Connections aborted: a request not received within server.request_timeout "
        "(request_timeout), a response not taken within server.write_timeout (write_timeout)",
        labels=["reason"],
    )
    aborted.add_metric(["request_timeout"], status.slow_requests)
    aborted.add_metric(["write_timeout"], status.slow_readers)
    yield aborted
    dedup = status.dedup
    if dedup is not None:
        yield _gauge("rta_dedup_ids", "Client-given event ids remembered for dedup", dedup.ids)
        yield _gauge("rta_dedup_max_ids", "dedup.max_ids", dedup.max_ids)
        yield _counter(
            "rta_dedup_evicted_ids",
            "Event ids forgotten before dedup.horizon because dedup.max_ids was reached",
            dedup.evicted,
        )
        yield _gauge(
            "rta_dedup_oldest_id_seconds",
            "Age of the oldest remembered slice of event ids (ids arrive in slices of "
            "dedup.horizon / 24): the dedup horizon in effect",
            dedup.oldest_age,
        )
    journal = status.journal
    if journal is not None:
        yield _gauge("rta_journal_bytes", "Bytes in the journal's segment files", journal.bytes)
        yield _gauge("rta_journal_max_bytes", "journal.max_bytes", journal.max_bytes)
        yield _gauge(
            "rta_journal_oldest_unstored_seconds",
            "Age of the oldest acknowledged event the store does not hold yet (0: none)",
            journal.oldest_unstored_age or 0.0,
        )
        if journal.checkpoint_age is not None:
            yield _gauge(
                "rta_checkpoint_age_seconds",
                "Seconds since the last checkpoint",
                journal.checkpoint_age,
            )
        yield _counter(
            "rta_journal_fsync_failures",
            "fsyncs of the journal that failed",
            journal.fsync_failures,
        )


def analytics_families(
    snapshots: Mapping[str, MetricSnapshot], rules: Rules, reserved: frozenset[str] = frozenset()
) -> Iterator[Metric]:
    """Plain metrics by kind (counters as counters, uniques and gauges as gauges,
    histograms as summaries: quantiles plus _count and _sum); the series of a labelled
    rule metric as one family with its labels (``rta_signups_total{plan="pro"}``), named
    ``rta_<base>_by_<labels>`` when a plain metric already takes ``rta_<base>`` (the
    built-in ``clicks`` beside ``clicks:<element>``). A name the daemon's own metrics
    take (``reserved``: a rule named ``queue_depth``) becomes ``rta_analytics_<name>``:
    one name for two families would make the whole scrape invalid."""
    for family in _analytics_families(snapshots, rules):
        if family.name in reserved:
            family.name = "rta_analytics_" + family.name[len("rta_") :]
            for index, sample in enumerate(family.samples):
                family.samples[index] = sample._replace(
                    name="rta_analytics_" + sample.name[len("rta_") :]
                )
        yield family


def _analytics_families(snapshots: Mapping[str, MetricSnapshot], rules: Rules) -> Iterator[Metric]:
    plain = {name for name in snapshots if ":" not in name}
    families: dict[str, Metric] = {}
    for name, snapshot in snapshots.items():
        base, _, key = name.partition(":")
        family = rules.family(base) if key else None
        if family is None or snapshot.type != family.kind:
            yield from _plain_family(name, snapshot)
            continue
        values = _label_values(family, key)
        if values is None:
            yield from _plain_family(name, snapshot)
            continue
        exposed = families.get(base)
        if exposed is None:
            exposed = families[base] = _labelled_family(family, base in plain)
        _add_series(exposed, family, values, snapshot)
    yield from families.values()


def _label_values(family: Family, key: str) -> list[str] | None:
    if key == OTHER:
        return [OTHER] * len(family.labels)
    parsed = parse_series_key(key, family.labels)
    return None if parsed is None else [parsed[label] for label in family.labels]


def _labelled_family(family: Family, beside_plain: bool) -> Metric:
    labels = _label_names(family)
    base = family.base if not beside_plain else f"{family.base}_by_{'_'.join(labels)}"
    name = metric_name(base)
    by = ", ".join(family.labels)
    if family.kind == "counter":
        return CounterMetricFamily(name, f"Analytics counter {family.base} by {by}", labels=labels)
    if family.kind == "histogram":
        return SummaryMetricFamily(
            name,
            f"Analytics histogram {family.base} by {by} (quantiles from a KLL sketch)",
            labels=labels,
        )
    kind = "distinct count estimate" if family.kind == "set" else "gauge"
    return GaugeMetricFamily(name, f"Analytics {kind} {family.base} by {by}", labels=labels)


def _add_series(
    exposed: Metric, family: Family, values: list[str], snapshot: MetricSnapshot
) -> None:
    if isinstance(exposed, SummaryMetricFamily):
        exposed.add_metric(values, count_value=snapshot.count, sum_value=snapshot.sum or 0.0)
        labels = dict(zip(_label_names(family), values, strict=True))
        for quantile, attribute in _QUANTILES:
            value = getattr(snapshot, attribute)
            if value is not None:
                exposed.samples.append(
                    Sample(exposed.name, {**labels, "quantile": quantile}, value)
                )
        return
    exposed.add_metric(values, snapshot.value)  # type: ignore[attr-defined]


def _label_names(family: Family) -> list[str]:
    return [_INVALID.sub("_", label) for label in family.labels]


def _plain_family(name: str, snapshot: MetricSnapshot) -> Iterator[Metric]:
    if snapshot.type == "counter":
        yield _counter(metric_name(name), f"Analytics counter {name}", snapshot.value)
    elif snapshot.type in ("gauge", "set"):
        kind = "distinct count estimate" if snapshot.type == "set" else "gauge"
        yield _gauge(metric_name(name), f"Analytics {kind} {name}", snapshot.value)
    elif snapshot.type == "histogram":
        family = SummaryMetricFamily(
            metric_name(name),
            f"Analytics histogram {name} (quantiles from a KLL sketch)",
            count_value=snapshot.count,
            sum_value=snapshot.sum or 0.0,
        )
        for quantile, attribute in _QUANTILES:
            value = getattr(snapshot, attribute)
            if value is not None:
                family.samples.append(Sample(family.name, {"quantile": quantile}, value))
        yield family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)

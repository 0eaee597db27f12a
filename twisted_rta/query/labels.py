"""Label queries: which series of a labelled rule metric a query takes, and their
breakdown by one label (uniques merged as sketches, never summed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from attrs import frozen

from twisted_rta.aggregation.metrics import Counter, Gauge, Histogram, Metric, Unique
from twisted_rta.aggregation.rules import (
    OTHER,
    RESERVED_LABELS,
    Family,
    Rules,
    parse_series_key,
)
from twisted_rta.query.merge import merge_into
from twisted_rta.query.slices import StepBudget


class LabelError(ValueError):
    """A query names a label the metric does not have."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def empty_metric(kind: str) -> Metric:
    return {"counter": Counter, "gauge": Gauge, "histogram": Histogram, "set": Unique}[kind]()


def rank_value(metric: Metric) -> float:
    """What a breakdown ranks by: a counter's value, a unique's estimate, a histogram's
    count, a gauge's value."""
    if isinstance(metric, Unique):
        return float(metric.estimate)
    if isinstance(metric, Histogram):
        return float(metric.count)
    return metric.value


@frozen
class LabelSelection:
    """The series of the labelled metric ``family`` whose labels equal ``filters`` (all of
    them when there is none, the ``__other__`` bucket included so the sum stays whole)."""

    family: Family
    filters: Mapping[str, str]
    total_name: str | None  # the rule's unlabelled total, when it keeps one

    @classmethod
    def of(cls, rules: Rules, name: str, args: Mapping[str, str]) -> LabelSelection | None:
        """The selection a query of ``name`` with query ``args`` makes, or None when
        ``name`` is not a labelled rule metric. Raises LabelError for an unknown label."""
        family = rules.family(name)
        if family is None or not family.labels:
            return None
        filters = {key: value for key, value in args.items() if key not in RESERVED_LABELS}
        for label in filters:
            if label not in family.labels:
                raise LabelError(
                    label,
                    f"{name!r} has no label {label!r} (its labels: {', '.join(family.labels)})",
                )
        total = name if rules.expected_kind(name) == family.kind else None
        return cls(family, filters, total)

    @property
    def prefix(self) -> str:
        return self.family.base + ":"

    @property
    def reads_total(self) -> bool:
        """No filter and the rule keeps a total: the total answers (it also holds the events
        that lacked a label)."""
        return not self.filters and self.total_name is not None

    def labels_of(self, name: str) -> dict[str, str] | None:
        """The labels of the series ``name`` (``{}`` for the bucket), or None when it is not
        one of this family's series."""
        if not name.startswith(self.prefix):
            return None
        key = name[len(self.prefix) :]
        if key == OTHER:
            return {}
        return parse_series_key(key, self.family.labels)

    def takes(self, name: str, *, ignoring: str | None = None) -> bool:
        """Whether the series ``name`` is selected (``ignoring``: a label whose filter does
        not apply, the one a breakdown groups by)."""
        labels = self.labels_of(name)
        if labels is None:
            return False
        filters = {k: v for k, v in self.filters.items() if k != ignoring}
        if not labels:
            return not filters  # the bucket cannot say which labels its series had
        return all(labels.get(label) == value for label, value in filters.items())

    def merged(self, metrics: Iterable[tuple[str, Metric]]) -> Metric:
        """The selected series among ``metrics`` (owned copies) merged into one."""
        merged: dict[str, Metric] = {}
        for name, metric in metrics:
            if self.takes(name):
                merge_into(merged, "", metric)
        return merged.get("") or empty_metric(self.family.kind)


@frozen
class LabelBreakdown:
    items: list[tuple[str, Metric]]  # the top groups, by rank value
    other: Metric  # every other group and the overflow bucket, merged
    total: Metric  # everything selected, merged


class LabelTally:
    """The selected series grouped by the value of one label, merged per group a slice at
    a time, then ranked (``rank_value``, ties by value name)."""

    def __init__(self, selection: LabelSelection, by: str) -> None:
        self.selection = selection
        self.by = by
        self.groups: dict[str, Metric] = {}
        self._budget = StepBudget()

    def add_steps(self, metrics: Iterable[tuple[str, Metric]]) -> Iterator[None]:
        """Group each (name, owned metric); yields between steps."""
        return self._budget.steps(metrics, self._group)

    def _group(self, chunk: list[tuple[str, Metric]]) -> None:
        selection, by, groups = self.selection, self.by, self.groups
        for name, metric in chunk:
            if not selection.takes(name, ignoring=by):
                continue
            labels = selection.labels_of(name) or {}
            merge_into(groups, labels.get(by, OTHER), metric)

    def result(self, limit: int) -> LabelBreakdown:
        kind = self.selection.family.kind
        ranked = sorted(
            ((key, metric) for key, metric in self.groups.items() if key != OTHER),
            key=lambda item: (-rank_value(item[1]), item[0]),
        )
        top = ranked[:limit]
        listed = {key for key, _ in top}
        other: dict[str, Metric] = {}
        total: dict[str, Metric] = {}
        for key, metric in self.groups.items():
            merge_into(total, "", metric.copy())
            if key not in listed:
                merge_into(other, "", metric.copy())
        return LabelBreakdown(
            top, other.get("") or empty_metric(kind), total.get("") or empty_metric(kind)
        )

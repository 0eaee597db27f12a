"""The web analytics summary of one site (or all of them): visitors, visits, pageviews,
bounce rate and visit duration, from the web preset's metrics (aggregation/rules.py
``web_rules``) merged over a range."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from twisted_rta.aggregation.metrics import Counter, Metric, Unique
from twisted_rta.aggregation.rules import Rules
from twisted_rta.query.labels import LabelSelection

SITE = "site"
# The web preset's metrics a summary reads, each a family labelled by site.
VISITORS, VISITS, PAGEVIEWS = "visitors", "visits", "site_pageviews"
ENGAGED_VISITS, VISIT_SECONDS = "engaged_visits", "visit_seconds"
SUMMARY_METRICS = (VISITORS, VISITS, PAGEVIEWS, ENGAGED_VISITS, VISIT_SECONDS)


def per_site_metrics(rules: Rules) -> list[str]:
    """The families kept per site (a ``site`` label), sorted."""
    return sorted(base for base, family in rules.families().items() if SITE in family.labels)


def site_selection(rules: Rules, name: str, site: str | None = None) -> LabelSelection | None:
    """The series of the per-site metric ``name`` of ``site`` (every site's when None), or
    None when ``name`` is not kept per site (``metrics.web: false`` and no such rule)."""
    family = rules.family(name)
    if family is None or SITE not in family.labels:
        return None
    return LabelSelection.of(rules, name, {} if site is None else {SITE: site})


def summary_selections(rules: Rules, site: str | None) -> dict[str, LabelSelection] | None:
    """What a summary reads: each metric's series of ``site`` (every site's when None);
    None when the web metrics are off."""
    selections = {name: site_selection(rules, name, site) for name in SUMMARY_METRICS}
    if any(selection is None for selection in selections.values()):
        return None
    return {name: selection for name, selection in selections.items() if selection is not None}


@frozen
class WebSummary:
    """A site's figures over a range. Visits count by their first event; a visit's other
    figures (its second pageview, its seconds) by the events that make them, so at the
    edges of a range a visit may count in one and not the other: the rates are clamped."""

    visitors: int
    visits: int
    pageviews: int
    engaged_visits: int  # visits that reached a second pageview
    visit_seconds: float  # every visit's first-to-last span, summed

    @classmethod
    def of(cls, merged: Mapping[str, Metric]) -> WebSummary:
        """From each of ``SUMMARY_METRICS`` merged over the range."""
        visitors = merged[VISITORS]
        assert isinstance(visitors, Unique)
        return cls(
            visitors=visitors.estimate,
            visits=int(_count(merged[VISITS])),
            pageviews=int(_count(merged[PAGEVIEWS])),
            engaged_visits=int(_count(merged[ENGAGED_VISITS])),
            visit_seconds=_count(merged[VISIT_SECONDS]),
        )

    @property
    def bounce_rate(self) -> float | None:
        """The share of visits with a single pageview, 0..1; None without a visit."""
        if not self.visits:
            return None
        return round(max(0.0, 1.0 - self.engaged_visits / self.visits), 4)

    @property
    def visit_duration(self) -> float | None:
        """The mean seconds from a visit's first event to its last; None without a visit."""
        return round(self.visit_seconds / self.visits, 1) if self.visits else None

    @property
    def views_per_visit(self) -> float | None:
        return round(self.pageviews / self.visits, 2) if self.visits else None

    def view(self, site: str | None) -> dict[str, Any]:
        return {
            "site": site,
            "visitors": self.visitors,
            "visits": self.visits,
            "pageviews": self.pageviews,
            "views_per_visit": self.views_per_visit,
            "bounce_rate": self.bounce_rate,
            "visit_duration": self.visit_duration,
        }


def _count(metric: Metric) -> float:
    assert isinstance(metric, Counter)
    return metric.value

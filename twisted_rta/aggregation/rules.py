"""Metric rules as data: which events a rule matches, what it aggregates, under which labels.

The Go original's metrics (``pageviews``, ``page_views:<page>``, ``clicks``,
``clicks:<element>``, ``unique_pages``, ``purchases``, ``revenue``, ``revenue_histogram``)
are one preset of these rules (``builtin_rules``); the generic metrics every event feeds
(``total_events``, ``events_by_type:<type>``, ``unique_users``, ``unique_sessions``) are not
rules: stats, readiness and the API are defined in terms of them.

Names. A rule with one aggregation makes the metric ``<name>``; with several, one metric per
aggregation, ``<name>_<aggregation>`` (``order_value_sum``, ``order_value_histogram``). A
labelled metric is a family of series ``<metric>:<key>``: the key is the label's value for
one label (``page_views:/home``), ``<label>=<value>,...`` in label-name order for several
(``,`` ``=`` and ``\\`` in a value escaped with ``\\``), and ``__other__`` for the series
past ``max_series``. With ``total`` a labelled rule also keeps ``<metric>`` over every
matched event, labelled or not (the built-in ``clicks``).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import field, frozen

from twisted_rta.aggregation.fields import FieldPath
from twisted_rta.escapes import split_unescaped

# Metrics every event feeds; stats and the API depend on these names.
TOTAL_EVENTS = "total_events"
EVENTS_BY_TYPE = "events_by_type"
UNIQUE_USERS = "unique_users"
UNIQUE_SESSIONS = "unique_sessions"
GENERIC_METRICS = (TOTAL_EVENTS, UNIQUE_USERS, UNIQUE_SESSIONS)
OTHER = "__other__"

# Aggregation -> the metric kind it makes, in the order a rule's metrics are listed.
AGGREGATIONS: Mapping[str, str] = {
    "count": "counter",
    "sum": "counter",
    "histogram": "histogram",
    "unique": "set",
    "gauge": "gauge",
}
MAX_LABELS = 3
DEFAULT_MAX_SERIES = 1000
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Query parameters of the query API, so never label names (labels are query filters).
RESERVED_LABELS = frozenset({"from", "to", "resolution", "by", "limit", "after", "prefix"})

# Why a rule's metric skipped an event (the ``reason`` of rta_rule_skips_total).
MISSING = "missing"  # the aggregated field is absent or null
MISTYPED = "mistyped"  # it is not the JSON type the aggregation takes
OUT_OF_RANGE = "out_of_range"  # a negative sum, a number beyond float range
MISSING_LABEL = "missing_label"
MISTYPED_LABEL = "mistyped_label"  # a label value that is not a string
SKIP_REASONS = (MISSING, MISTYPED, OUT_OF_RANGE, MISSING_LABEL, MISTYPED_LABEL)

Scalar = str | int | float | bool | None


@frozen(cache_hash=True)  # a key of the per-batch extraction caches
class Condition:
    """The field equals one of ``values`` (JSON equality: ``1`` is not ``true``); or, with
    ``present`` set, the field is there and not null (``present=True``) or is not."""

    field: FieldPath
    values: tuple[Scalar, ...] = ()
    present: bool | None = None
    # The values as a set when they are all strings (then only an equal string holds).
    strings: frozenset[str] | None = attrs.field(init=False, eq=False, repr=False)
    # The JSON types and the set of the values when they are all of one kind (booleans,
    # or numbers): a value holds when its type is one of them and it is in the set.
    typed: tuple[tuple[type, ...], frozenset[Any]] | None = attrs.field(
        init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.present is not None and self.values:
            raise ValueError("a condition takes either values or present, not both")
        texts = self.values if self.values and all(type(v) is str for v in self.values) else None
        object.__setattr__(self, "strings", None if texts is None else frozenset(texts))
        kinds = {_json_kind(value) for value in self.values}
        typed = None
        if len(kinds) == 1 and None not in kinds:
            (kind,) = kinds
            assert kind is not None
            typed = (kind, frozenset(self.values))
        object.__setattr__(self, "typed", typed)

    def as_config(self) -> Any:
        return list(self.values) if self.present is None else {"present": self.present}

    def holds(self, value: Any) -> bool:
        if self.present is not None:
            return (value is not None) is self.present
        return any(value == v and type(value) is type(v) for v in self.values) or (
            # 1 and 1.0 are one JSON number.
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and any(
                isinstance(v, int | float) and not isinstance(v, bool) and v == value
                for v in self.values
            )
        )


def _json_kind(value: Scalar) -> tuple[type, ...] | None:
    """The Python types of one JSON kind (1 and 1.0 are one number; true is not 1)."""
    if isinstance(value, bool):
        return (bool,)
    if isinstance(value, int | float) and math.isfinite(value):
        return (int, float)
    if isinstance(value, str):
        return (str,)
    return None  # null, or a float that is not a JSON number


@frozen(cache_hash=True)
class Match:
    """Which events a rule takes: a type (exact) or a type glob (``fnmatch``: ``*``,
    ``?``, ``[...]``, case-sensitive), and every ``where`` condition."""

    type: str | None = None
    type_glob: str | None = None
    where: tuple[Condition, ...] = ()

    def __attrs_post_init__(self) -> None:
        if (self.type is None) == (self.type_glob is None):
            raise ValueError("a match takes exactly one of type and type_glob")

    def as_config(self) -> dict[str, Any]:
        """The match as it is written in the config."""
        out: dict[str, Any] = (
            {"type": self.type} if self.type is not None else {"type_glob": self.type_glob}
        )
        if self.where:
            out["where"] = {str(c.field): c.as_config() for c in self.where}
        return out

    def takes_type(self, event_type: str) -> bool:
        if self.type is not None:
            return event_type == self.type
        assert self.type_glob is not None
        return fnmatch.fnmatchcase(event_type, self.type_glob)


@frozen
class MetricRule:
    """One rule: the events it matches, its aggregations (``count`` and/or a field per
    kind), its labels (label name -> field, up to three) and the bound on its series."""

    name: str
    when: Match
    count: bool = False
    sum: FieldPath | None = None
    histogram: FieldPath | None = None
    unique: FieldPath | None = None
    gauge: FieldPath | None = None
    labels: tuple[tuple[str, FieldPath], ...] = ()
    max_series: int | None = None  # None: the aggregator's max_dimension_values
    total: bool = False

    def __attrs_post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} must be 1-128 letters, digits, _ . or -, "
                "starting with a letter or _"
            )
        if not self.aggregations():
            raise ValueError("a rule needs an aggregation: count, sum, histogram, unique or gauge")
        if len(self.labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels, got {len(self.labels)}")
        names = [label for label, _ in self.labels]
        for label in names:
            if not LABEL.fullmatch(label):
                raise ValueError(f"label name {label!r} must be letters, digits and _")
            if label in RESERVED_LABELS:
                raise ValueError(f"label name {label!r} is a query parameter of the API")
        if len(set(names)) != len(names):
            raise ValueError("a label name is given twice")
        if self.max_series is not None and self.max_series < 1:
            raise ValueError("max_series must be at least 1")
        if self.total and not self.labels:
            raise ValueError("total only applies to a rule with labels")

    def as_config(self) -> dict[str, Any]:
        """The rule as it is written in the config."""
        out: dict[str, Any] = {"name": self.name, "when": self.when.as_config()}
        for aggregation, path in self.aggregations():
            out[aggregation] = True if path is None else str(path)
        if self.labels:
            out["labels"] = {label: str(path) for label, path in self.labels}
        if self.max_series is not None:
            out["max_series"] = self.max_series
        if self.total:
            out["total"] = True
        return out

    def aggregations(self) -> tuple[tuple[str, FieldPath | None], ...]:
        """(aggregation, field) in the order of ``AGGREGATIONS``; count has no field."""
        fields = {
            "count": None,
            "sum": self.sum,
            "histogram": self.histogram,
            "unique": self.unique,
            "gauge": self.gauge,
        }
        return tuple(
            (aggregation, path)
            for aggregation, path in fields.items()
            if (self.count if aggregation == "count" else path is not None)
        )

    def metrics(self) -> tuple[MetricSpec, ...]:
        aggregations = self.aggregations()
        labels = tuple(sorted(self.labels))  # canonical: label-name order
        return tuple(
            MetricSpec(
                rule=self.name,
                name=self.name if len(aggregations) == 1 else f"{self.name}_{aggregation}",
                aggregation=aggregation,
                value=path,
                when=self.when,
                labels=labels,
                max_series=self.max_series,
                total=self.total or not labels,
            )
            for aggregation, path in aggregations
        )


@frozen
class DropRule:
    """Events this matches are not aggregated at all (still journalled and answered 202)."""

    when: Match

    def as_config(self) -> dict[str, Any]:
        return {"action": "drop", "when": self.when.as_config()}


@frozen(cache_hash=True)  # a key of per-spec caches
class MetricSpec:
    """One metric a rule makes, as the aggregator applies it."""

    rule: str
    name: str
    aggregation: str
    value: FieldPath | None
    when: Match
    labels: tuple[tuple[str, FieldPath], ...]  # sorted by label name
    max_series: int | None  # None: the aggregator's max_dimension_values
    total: bool  # whether the unlabelled metric ``name`` is kept

    @property
    def kind(self) -> str:
        return AGGREGATIONS[self.aggregation]

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.labels)


def series_key(values: Iterable[tuple[str, str]]) -> str:
    """The key of a series from its (label, value) pairs in label-name order."""
    pairs = list(values)
    if len(pairs) == 1:
        return pairs[0][1]
    return ",".join(f"{label}={escape_label_value(value)}" for label, value in pairs)


def parse_series_key(key: str, labels: tuple[str, ...]) -> dict[str, str] | None:
    """The label values of a series key of a metric with ``labels`` (sorted), or None for
    the overflow series or a key that is not of that shape."""
    if key == OTHER:
        return None
    if len(labels) == 1:
        return {labels[0]: key}
    values: dict[str, str] = {}
    for part in split_unescaped(key, ","):
        pieces = split_unescaped(part, "=")
        if len(pieces) != 2:
            return None
        values[_unescape(pieces[0])] = _unescape(pieces[1])
    return values if tuple(values) == labels else None


def escape_label_value(value: str) -> str:
    """A label value as it stands in a several-label series key."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def builtin_rules() -> tuple[MetricRule, ...]:
    """The Go original's metrics as rules (``metrics.builtin``); its families are bounded
    by the aggregator's ``max_dimension_values`` (``limits.max_dimension_values``)."""
    pageview, click, purchase = (Match(type=t) for t in ("pageview", "click", "purchase"))
    page = FieldPath.parse("properties.page")
    amount = FieldPath.parse("properties.amount")
    return (
        MetricRule("pageviews", pageview, count=True),
        MetricRule("page_views", pageview, count=True, labels=(("page", page),)),
        MetricRule("unique_pages", pageview, unique=page),
        MetricRule(
            "clicks",
            click,
            count=True,
            labels=(("element", FieldPath.parse("properties.element")),),
            total=True,
        ),
        MetricRule("purchases", purchase, count=True),
        MetricRule("revenue", purchase, sum=amount),
        MetricRule("revenue_histogram", purchase, histogram=amount),
    )


def web_rules() -> tuple[MetricRule, ...]:
    """The web analytics metrics (``metrics.web``), per site: every event that has a
    ``properties.site`` (the browser endpoints give every event one). Visits and their
    breakdowns (entry pages, sources, campaigns, browsers, OS, devices) count each visit
    once, by its first event (``entry``, web/browser.py), as Plausible attributes a visit
    to how it began. Their series are bounded by ``limits.max_dimension_values``."""
    site = FieldPath.parse("properties.site")
    on_site = Condition(site, present=True)
    entry = Condition(FieldPath.parse("properties.entry"), (True,))

    def where(*conditions: Condition, type: str | None = None) -> Match:
        if type is not None:
            return Match(type=type, where=(on_site, *conditions))
        return Match(type_glob="*", where=(on_site, *conditions))

    def present(name: str) -> Condition:
        return Condition(FieldPath.parse(f"properties.{name}"), present=True)

    def per_visit(name: str, label: str, prop: str, *also: Condition) -> MetricRule:
        labels = (("site", site), (label, FieldPath.parse(f"properties.{prop}")))
        return MetricRule(name, where(entry, *also), count=True, labels=labels)

    by_site = (("site", site),)
    return (
        MetricRule("visitors", where(), unique=FieldPath.parse("user_id"), labels=by_site),
        MetricRule("visits", where(entry), count=True, labels=by_site),
        MetricRule("site_pageviews", where(type="pageview"), count=True, labels=by_site),
        # Visits that reached a second pageview: the ones that did not bounce.
        MetricRule(
            "engaged_visits",
            where(Condition(FieldPath.parse("properties.visit_pageview"), (2,)), type="pageview"),
            count=True,
            labels=by_site,
        ),
        # Each event adds the seconds since its visit's previous one: the sum over a visit
        # is its first-to-last span.
        MetricRule(
            "visit_seconds",
            where(present("visit_seconds")),
            sum=FieldPath.parse("properties.visit_seconds"),
            labels=by_site,
        ),
        MetricRule(
            "top_pages",
            where(type="pageview"),
            count=True,
            labels=(("site", site), ("page", FieldPath.parse("properties.page"))),
        ),
        per_visit("entry_pages", "page", "page", present("page")),
        per_visit("sources", "source", "source"),
        per_visit("utm_campaigns", "utm_campaign", "utm_campaign", present("utm_campaign")),
        per_visit("utm_sources", "utm_source", "utm_source", present("utm_source")),
        per_visit("utm_mediums", "utm_medium", "utm_medium", present("utm_medium")),
        per_visit("browsers", "browser", "browser"),
        per_visit("operating_systems", "os", "os"),
        per_visit("devices", "device", "device"),
    )


def _as_rules(rules: Iterable[MetricRule]) -> tuple[MetricRule, ...]:
    return tuple(rules)


def _as_drops(drops: Iterable[DropRule]) -> tuple[DropRule, ...]:
    return tuple(drops)


@frozen
class Family:
    """A labelled metric's series family, as the metric sets hold it."""

    base: str
    kind: str
    labels: tuple[str, ...]
    max_series: int | None  # None: the aggregator's max_dimension_values


@frozen
class Rules:
    """Every rule the aggregator applies, checked as a whole: each metric name has one
    kind and one owner, and none takes a generic metric's name."""

    metrics: tuple[MetricRule, ...] = field(converter=_as_rules)
    drops: tuple[DropRule, ...] = field(default=(), converter=_as_drops)
    specs: tuple[MetricSpec, ...] = field(init=False, eq=False, repr=False)
    _kinds: dict[str, str] = field(init=False, eq=False, repr=False)
    _families: dict[str, Family] = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        specs = tuple(spec for rule in self.metrics for spec in rule.metrics())
        kinds = {TOTAL_EVENTS: "counter", UNIQUE_USERS: "set", UNIQUE_SESSIONS: "set"}
        owners = dict.fromkeys(kinds, "the generic metrics")
        families = {EVENTS_BY_TYPE: Family(EVENTS_BY_TYPE, "counter", ("type",), None)}
        owners[EVENTS_BY_TYPE] = "the generic metrics"
        for spec in specs:
            if spec.total:
                _claim(owners, spec.name, spec.rule)
                kinds[spec.name] = spec.kind
            if spec.labels:
                if spec.name in families:
                    raise ValueError(
                        f"rule {spec.rule!r}: the series {spec.name}:<...> are already "
                        f"made by {owners[spec.name]}"
                    )
                if not spec.total:
                    _claim(owners, spec.name, spec.rule)
                families[spec.name] = Family(
                    spec.name, spec.kind, spec.label_names, spec.max_series
                )
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "_kinds", kinds)
        object.__setattr__(self, "_families", families)

    def families(self) -> Mapping[str, Family]:
        """Every series family by base, ``events_by_type`` first."""
        return self._families

    def family(self, base: str) -> Family | None:
        return self._families.get(base)

    def expected_kind(self, name: str) -> str | None:
        """The kind these rules would create under ``name``, or None if they never do."""
        kind = self._kinds.get(name)
        if kind is not None:
            return kind
        base, colon, _ = name.partition(":")
        family = self._families.get(base) if colon else None
        return None if family is None else family.kind


def _claim(owners: dict[str, str], name: str, rule: str) -> None:
    owner = owners.get(name)
    if owner is not None:
        raise ValueError(f"rule {rule!r}: the metric name {name!r} is already made by {owner}")
    owners[name] = f"rule {rule!r}"


def as_amount(value: Any) -> float | None:
    """A finite float >= 0 for a JSON number (int or float, not bool), else None.

    Sums are exported as Prometheus counters, which must never decrease.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return amount if 0 <= amount < math.inf else None


def as_number(value: Any) -> float | None:
    """A finite float for a JSON number (int or float, not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


DEFAULT_RULES = Rules(builtin_rules())

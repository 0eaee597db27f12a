"""Which metrics an event feeds, as data (the seed service's rules are the default)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from attrs import field, frozen

from twisted_rta.aggregation.metrics import Counter, Histogram, Unique

# Metrics every event feeds; stats and the API depend on these names.
TOTAL_EVENTS = "total_events"
EVENTS_BY_TYPE = "events_by_type"
UNIQUE_USERS = "unique_users"
UNIQUE_SESSIONS = "unique_sessions"
GENERIC_METRICS = (TOTAL_EVENTS, UNIQUE_USERS, UNIQUE_SESSIONS)


@frozen
class DimensionRule:
    """A string property whose value names a counter ``<counter_prefix>:<value>`` (bounded)
    and/or is added to the unique set ``unique``. Non-string values are ignored."""

    property: str
    counter_prefix: str | None = None
    unique: str | None = None


@frozen
class AmountRule:
    """A numeric property added to counter ``sum_counter`` and observed by ``histogram``.

    Only real JSON numbers >= 0 count (see ``as_amount``): bools, numeric strings, negative
    and non-finite values are ignored, so a sum counter never decreases.
    """

    property: str
    sum_counter: str | None = None
    histogram: str | None = None


@frozen
class TypeRule:
    """Metrics fed by events whose type equals ``event_type`` exactly (case-sensitive)."""

    event_type: str
    counter: str
    dimensions: tuple[DimensionRule, ...] = ()
    amounts: tuple[AmountRule, ...] = ()


def _type_rules(rules: Iterable[TypeRule]) -> tuple[TypeRule, ...]:
    return tuple(rules)


def _check_types(_: object, __: object, value: tuple[TypeRule, ...]) -> None:
    seen = [rule.event_type for rule in value]
    if len(seen) != len(set(seen)):
        raise ValueError(f"duplicate event types in rules: {seen}")


@frozen
class Rules:
    """The type-specific rules; the generic metrics (total, by type, users, sessions) are
    fixed because stats and the API are defined in terms of them."""

    types: tuple[TypeRule, ...] = field(converter=_type_rules, validator=_check_types)
    # Exact metric name -> kind, built once; also rejects one name used for two kinds.
    _kinds: dict[str, str] = field(init=False, eq=False, repr=False)
    _bases: tuple[str, ...] = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        kinds = {
            TOTAL_EVENTS: Counter.kind,
            UNIQUE_USERS: Unique.kind,
            UNIQUE_SESSIONS: Unique.kind,
        }

        def claim(name: str | None, kind: str) -> None:
            if name is None:
                return
            if kinds.setdefault(name, kind) != kind:
                raise ValueError(f"metric {name!r} would be both {kinds[name]} and {kind}")

        for rule in self.types:
            claim(rule.counter, Counter.kind)
            for dim in rule.dimensions:
                claim(dim.unique, Unique.kind)
            for amount in rule.amounts:
                claim(amount.sum_counter, Counter.kind)
                claim(amount.histogram, Histogram.kind)
        object.__setattr__(self, "_kinds", kinds)
        bases = [EVENTS_BY_TYPE]
        for rule in self.types:
            for dim in rule.dimensions:
                if dim.counter_prefix is not None and dim.counter_prefix not in bases:
                    bases.append(dim.counter_prefix)
        object.__setattr__(self, "_bases", tuple(bases))

    def for_type(self) -> dict[str, TypeRule]:
        return {rule.event_type: rule for rule in self.types}

    def dimension_bases(self) -> tuple[str, ...]:
        """Every bounded counter family name, ``events_by_type`` first."""
        return self._bases

    def expected_kind(self, name: str) -> str | None:
        """The kind these rules would create under ``name``, or None if they never do."""
        kind = self._kinds.get(name)
        if kind is not None:
            return kind
        base, colon, _ = name.partition(":")
        if colon and base in self._bases:
            return Counter.kind
        return None


def as_amount(value: Any) -> float | None:
    """A finite float >= 0 for a JSON number (int or float, not bool), else None.

    Negative amounts are ignored: sums are exported as Prometheus counters, which must never
    decrease. (The decoder already rejects a purchase whose amount is not such a number.)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return amount if 0 <= amount < math.inf else None


DEFAULT_RULES = Rules(
    (
        TypeRule(
            "pageview",
            "pageviews",
            dimensions=(DimensionRule("page", counter_prefix="page_views", unique="unique_pages"),),
        ),
        TypeRule(
            "click",
            "clicks",
            dimensions=(DimensionRule("element", counter_prefix="clicks"),),
        ),
        TypeRule(
            "purchase",
            "purchases",
            amounts=(AmountRule("amount", sum_counter="revenue", histogram="revenue_histogram"),),
        ),
    )
)

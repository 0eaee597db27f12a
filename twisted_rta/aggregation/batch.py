"""Batch summaries: what a batch of events contributes, gathered once for every set it feeds.

Each metric set the batch feeds (the all-time set, a window) then applies the summary once
per metric and distinct value instead of once per event, with the same result as adding
the events one by one: ``n`` events make ``n`` contributions at once, and values keep their
arrival order, which decides what a bounded dimension admits, how a float sum rounds and
in which order the sketches see their members.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from attrs import frozen

from twisted_rta.aggregation.rules import Rules, TypeRule, as_amount
from twisted_rta.events.model import Event
from twisted_rta.internals import count_elements

# A rule entry, by position: (rule index, dimension or amount index).
_Source = tuple[int, int]
# What a channel takes from a batch: event type -> the properties it reads, in rule order.
Feeds = dict[str, tuple[str, ...]]
# Event type -> the properties of a batch's events of that type, in arrival order.
_Groups = dict[str, list[Mapping[str, Any]]]
# A metric name (or counter family base) and the channel holding its values.
_Target = tuple[str, int]


@frozen
class BatchLayout:
    """Where the values of a batch go, resolved once per ``Rules``.

    A channel is the list of values, in arrival order, of the metrics fed by the same rule
    entries: a page's unique set and its counter family share one, and a metric fed by
    several entries still sees its values in the order they came (event by event, and within
    an event in rule order).
    """

    counters: dict[str, str]  # event type -> its counter
    uniques: tuple[_Target, ...]
    families: tuple[_Target, ...]
    sums: tuple[_Target, ...]
    histograms: tuple[_Target, ...]
    string_feeds: tuple[Feeds, ...]  # per string channel
    amount_feeds: tuple[Feeds, ...]  # per amount channel
    read_types: tuple[str, ...]  # every event type some channel reads

    @classmethod
    def of(cls, rules: Rules) -> BatchLayout:
        uniques: dict[str, list[_Source]] = {}
        families: dict[str, list[_Source]] = {}
        sums: dict[str, list[_Source]] = {}
        histograms: dict[str, list[_Source]] = {}
        for r, rule in enumerate(rules.types):
            for d, dim in enumerate(rule.dimensions):
                if dim.unique is not None:
                    uniques.setdefault(dim.unique, []).append((r, d))
                if dim.counter_prefix is not None:
                    families.setdefault(dim.counter_prefix, []).append((r, d))
            for a, amount in enumerate(rule.amounts):
                if amount.sum_counter is not None:
                    sums.setdefault(amount.sum_counter, []).append((r, a))
                if amount.histogram is not None:
                    histograms.setdefault(amount.histogram, []).append((r, a))
        unique_targets, family_targets, string_sources = _channels(uniques, families)
        sum_targets, histogram_targets, amount_sources = _channels(sums, histograms)

        def feeds(sources: tuple[_Source, ...], prop: Callable[[TypeRule, int], str]) -> Feeds:
            taken: dict[str, list[str]] = {}
            for r, i in sources:  # in rule order
                rule = rules.types[r]
                taken.setdefault(rule.event_type, []).append(prop(rule, i))
            return {event_type: tuple(props) for event_type, props in taken.items()}

        string_feeds = tuple(
            feeds(sources, lambda rule, d: rule.dimensions[d].property)
            for sources in string_sources
        )
        amount_feeds = tuple(
            feeds(sources, lambda rule, a: rule.amounts[a].property) for sources in amount_sources
        )
        return cls(
            counters={rule.event_type: rule.counter for rule in rules.types},
            uniques=unique_targets,
            families=family_targets,
            sums=sum_targets,
            histograms=histogram_targets,
            string_feeds=string_feeds,
            amount_feeds=amount_feeds,
            read_types=tuple(
                dict.fromkeys(t for feeds in (*string_feeds, *amount_feeds) for t in feeds)
            ),
        )


def _channels(
    first: dict[str, list[_Source]], second: dict[str, list[_Source]]
) -> tuple[tuple[_Target, ...], tuple[_Target, ...], list[tuple[_Source, ...]]]:
    """One channel per distinct list of sources among two kinds of targets (name -> its
    sources): each kind's targets with their channel, and each channel's sources."""
    channel_of: dict[tuple[_Source, ...], int] = {}

    def targets(sources_by_name: dict[str, list[_Source]]) -> tuple[_Target, ...]:
        return tuple(
            (name, channel_of.setdefault(tuple(sources), len(channel_of)))
            for name, sources in sources_by_name.items()
        )

    first_targets, second_targets = targets(first), targets(second)
    return first_targets, second_targets, list(channel_of)


# A few entries: a config reload may bring new rules, old ones need not stay.
layout_for = lru_cache(maxsize=8)(BatchLayout.of)


def _tally(values: Iterable[Hashable]) -> dict[Any, int]:
    """Occurrences per value, keyed in order of first occurrence."""
    counts: dict[Any, int] = {}
    count_elements(counts, values)  # Counter's C loop, without Counter()'s own cost
    return counts


def _distinct(ids: Iterable[str | None]) -> list[str]:
    """The ids that are set (not None, not empty), each once, in order of first occurrence.

    A sketch that sees a member again changes nothing (neither its registers nor its HIP
    estimate), so each set updates its sketches once per distinct member of the batch.
    """
    members = dict.fromkeys(ids)
    members.pop(None, None)
    members.pop("", None)
    return list(members)  # type: ignore[arg-type]  # None is gone


def _only_source(feeds: Feeds) -> tuple[str, str] | None:
    """The event type and property when ``feeds`` reads one property of one type (as every
    channel of the default rules does), else None."""
    if len(feeds) == 1:
        ((event_type, props),) = feeds.items()
        if len(props) == 1:
            return event_type, props[0]
    return None


def _gather(feeds: Feeds, types: list[str], events: Sequence[Event]) -> list[Any]:
    """The values of the properties ``feeds`` reads, in arrival order (None where absent)."""
    return [
        event.properties.get(prop)
        for t, event in zip(types, events, strict=True)
        for prop in feeds.get(t, ())
    ]


def _strings(feeds: Feeds, groups: _Groups, types: list[str], events: Sequence[Event]) -> list[str]:
    """The string values ``feeds`` reads, in arrival order."""
    source = _only_source(feeds)
    if source is not None:
        # Only the events of one type, read in one comprehension: -0.1 us/event per channel.
        event_type, prop = source
        return [v for p in groups[event_type] if isinstance(v := p.get(prop), str)]
    return [v for v in _gather(feeds, types, events) if isinstance(v, str)]


def _amounts(
    feeds: Feeds, groups: _Groups, types: list[str], events: Sequence[Event]
) -> list[float]:
    """The amounts (see ``as_amount``) ``feeds`` reads, in arrival order."""
    source = _only_source(feeds)
    if source is not None:
        event_type, prop = source
        values = [p.get(prop) for p in groups[event_type]]
    else:
        values = _gather(feeds, types, events)
    return [amount for amount in map(as_amount, values) if amount is not None]


@frozen
class BatchSummary:
    """What one batch of events contributes: per string channel its values counted (each
    distinct value once, in order of first arrival), per amount channel its amounts in
    arrival order, and the distinct users and sessions."""

    size: int
    types: dict[str, int]  # event type -> events, in order of first arrival
    users: list[str]  # distinct, in order of first arrival
    sessions: list[str]
    tallies: list[dict[str, int]]  # per string channel: value -> occurrences
    amounts: list[list[float]]  # per amount channel

    @classmethod
    def of(cls, events: Sequence[Event], layout: BatchLayout) -> BatchSummary:
        # Column by column (comprehensions and C loops), and each channel reads only the
        # events of its types, rather than one Python loop doing everything per event:
        # -0.15 us/event with the default rules (0.5 -> 0.35 us, before deduplication).
        types = [event.type for event in events]
        # The properties of the events of each type a channel reads, in arrival order.
        groups: _Groups = {event_type: [] for event_type in layout.read_types}
        for event_type, event in zip(types, events, strict=True):
            group = groups.get(event_type)
            if group is not None:
                group.append(event.properties)
        return cls(
            size=len(events),
            types=_tally(types),
            users=_distinct([event.user_id for event in events]),
            sessions=_distinct([event.session_id for event in events]),
            tallies=[
                _tally(_strings(feeds, groups, types, events)) for feeds in layout.string_feeds
            ],
            amounts=[_amounts(feeds, groups, types, events) for feeds in layout.amount_feeds],
        )

"""Batch summaries: what a batch of events contributes, gathered in one pass over the events.

Each metric set the batch feeds (the all-time set, a window) then applies the summary once
per metric and distinct value instead of once per event, with the same result as adding
the events one by one: ``n`` events make ``n`` contributions at once, and values keep their
arrival order, which decides what a bounded dimension admits, how a float sum rounds and
in which order the sketches see their members.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from attrs import define, field, frozen

from twisted_rta.aggregation.rules import Rules, as_amount
from twisted_rta.events.model import Event
from twisted_rta.internals import count_elements

# A rule entry, by position: (rule index, dimension or amount index).
_Source = tuple[int, int]
# A property of an event type and the channels its values go to.
_Feed = tuple[str, tuple[int, ...]]
# A metric name (or counter family base) and the channel holding its values.
_Target = tuple[str, int]


@frozen
class _Route:
    """What one event type feeds, in rule order."""

    strings: tuple[_Feed, ...]
    amounts: tuple[_Feed, ...]


@frozen
class BatchLayout:
    """Where the values of a batch go, resolved once per ``Rules``.

    A channel is the list of values, in arrival order, of the metrics fed by the same rule
    entries: a page's unique set and its counter family share one, and a metric fed by
    several entries still sees its values in the order they came.
    """

    routes: dict[str, _Route]  # event type -> what it feeds
    counters: dict[str, str]  # event type -> its counter
    uniques: tuple[_Target, ...]
    families: tuple[_Target, ...]
    sums: tuple[_Target, ...]
    histograms: tuple[_Target, ...]
    string_channels: int
    amount_channels: int

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
        string_feeds: dict[_Source, list[int]] = {}
        amount_feeds: dict[_Source, list[int]] = {}
        unique_targets, family_targets, strings = _channels(uniques, families, string_feeds)
        sum_targets, histogram_targets, amounts = _channels(sums, histograms, amount_feeds)
        routes = {
            rule.event_type: _Route(
                strings=tuple(
                    (dim.property, tuple(string_feeds[r, d]))
                    for d, dim in enumerate(rule.dimensions)
                    if (r, d) in string_feeds
                ),
                amounts=tuple(
                    (amount.property, tuple(amount_feeds[r, a]))
                    for a, amount in enumerate(rule.amounts)
                    if (r, a) in amount_feeds
                ),
            )
            for r, rule in enumerate(rules.types)
        }
        return cls(
            routes=routes,
            counters={rule.event_type: rule.counter for rule in rules.types},
            uniques=unique_targets,
            families=family_targets,
            sums=sum_targets,
            histograms=histogram_targets,
            string_channels=strings,
            amount_channels=amounts,
        )


def _channels(
    first: dict[str, list[_Source]],
    second: dict[str, list[_Source]],
    feeds: dict[_Source, list[int]],
) -> tuple[tuple[_Target, ...], tuple[_Target, ...], int]:
    """One channel per distinct list of sources among two kinds of targets (name -> its
    sources): each kind's targets with their channel, and the channel count. Each source's
    channels are added to ``feeds``."""
    channel_of: dict[tuple[_Source, ...], int] = {}

    def targets(sources_by_name: dict[str, list[_Source]]) -> tuple[_Target, ...]:
        return tuple(
            (name, channel_of.setdefault(tuple(sources), len(channel_of)))
            for name, sources in sources_by_name.items()
        )

    first_targets, second_targets = targets(first), targets(second)
    for sources, channel in channel_of.items():
        for source in sources:
            feeds.setdefault(source, []).append(channel)
    return first_targets, second_targets, len(channel_of)


# A few entries: a config reload may bring new rules, old ones need not stay.
layout_for = lru_cache(maxsize=8)(BatchLayout.of)


def _tally(values: Iterable[str]) -> dict[str, int]:
    """Occurrences per value, keyed in order of first occurrence."""
    counts: dict[str, int] = {}
    count_elements(counts, values)  # Counter's C loop, without Counter()'s own cost
    return counts


@define
class BatchSummary:
    """What one batch of events contributes, in arrival order."""

    size: int
    types: dict[str, int]  # event type -> events, in order of first arrival
    users: list[str]
    sessions: list[str]
    strings: list[list[str]]  # per string channel
    amounts: list[list[float]]  # per amount channel
    _tallies: dict[int, dict[str, int]] = field(factory=dict)

    @classmethod
    def of(cls, events: Sequence[Event], layout: BatchLayout) -> BatchSummary:
        types: list[str] = []
        users: list[str] = []
        sessions: list[str] = []
        strings: list[list[str]] = [[] for _ in range(layout.string_channels)]
        amounts: list[list[float]] = [[] for _ in range(layout.amount_channels)]
        routes = layout.routes
        # The only loop over the events: it touches each one once (memory bound).
        for event in events:
            event_type = event.type
            types.append(event_type)
            if event.user_id:
                users.append(event.user_id)
            if event.session_id:
                sessions.append(event.session_id)
            route = routes.get(event_type)
            if route is None:
                continue
            props = event.properties
            for prop, channels in route.strings:
                value = props.get(prop)
                if isinstance(value, str):
                    for channel in channels:
                        strings[channel].append(value)
            for prop, channels in route.amounts:
                amount = as_amount(props.get(prop))
                if amount is not None:
                    for channel in channels:
                        amounts[channel].append(amount)
        return cls(len(events), _tally(types), users, sessions, strings, amounts)

    def tally(self, channel: int) -> dict[str, int]:
        """Occurrences per value of a string channel, in order of first arrival; counted
        once for all the sets the batch feeds."""
        tally = self._tallies.get(channel)
        if tally is None:
            tally = self._tallies[channel] = _tally(self.strings[channel])
        return tally

"""Batch summaries: what a batch of events contributes to each rule metric, gathered once
for every metric set it feeds.

Each set the batch feeds (the all-time set, a window) then applies the summary once per
metric and series instead of once per event, with the same result as adding the events one
by one: values keep their arrival order, which decides what a bounded family admits, how a
float sum rounds, which gauge value is the latest and in which order sketches see members.

The rules are compiled once (``BatchPlan``): per event type, which rule metrics take it;
per batch, each distinct extraction (the same events, the same field, the same check) is
made once and shared, as ``page_views`` and ``unique_pages`` share the pages of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import lru_cache
from typing import Any

from attrs import define, field, frozen

from twisted_rta.aggregation.fields import FieldPath
from twisted_rta.aggregation.rules import (
    MISSING,
    MISSING_LABEL,
    MISTYPED,
    MISTYPED_LABEL,
    OUT_OF_RANGE,
    Condition,
    Match,
    MetricSpec,
    Rules,
    as_amount,
    as_number,
    escape_label_value,
)
from twisted_rta.events.model import Event
from twisted_rta.internals import count_elements

# How a field's value is checked, by aggregation: labels and unique members are strings,
# sums finite numbers >= 0 (exported as counters, which never decrease), histograms and
# gauges finite numbers.
STRING, AMOUNT, NUMBER = "string", "amount", "number"
_CHECK_OF = {"sum": AMOUNT, "histogram": NUMBER, "gauge": NUMBER, "unique": STRING}
_CONVERT: dict[str, Callable[[Any], Any]] = {
    AMOUNT: as_amount,
    NUMBER: as_number,
    STRING: lambda value: value if type(value) is str else None,
}
# Types remembered per plan; past it a type's rules are worked out per batch (an attacker
# sending a million distinct types must not grow memory).
_MAX_REMEMBERED_TYPES = 10_000
_INF = math.inf

Skips = dict[tuple[str, str], int]  # (rule, reason) -> events


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


def _reason(value: Any, check: str) -> str:
    """Why ``value`` failed ``check`` (it did)."""
    if value is None:
        return MISSING
    if check != STRING and isinstance(value, int | float) and not isinstance(value, bool):
        return OUT_OF_RANGE
    return MISTYPED


def _numbers(raw: list[Any], check: str) -> list[float]:
    """The values of ``raw`` that pass ``check`` (AMOUNT or NUMBER), as floats, in order.

    One comprehension rather than a call of ``as_amount`` per value (-0.1 us/event with
    the built-in rules); the rare int beyond float range takes the careful path.
    """
    try:
        if check == AMOUNT:
            return [float(v) for v in raw if (type(v) is float or type(v) is int) and 0 <= v < _INF]
        return [float(v) for v in raw if (type(v) is float or type(v) is int) and -_INF < v < _INF]
    except OverflowError:
        convert = _CONVERT[check]
        return [x for x in map(convert, raw) if x is not None]


def _extract(
    events: list[Event],
    path: FieldPath,
    check: str,
    raws: dict[tuple[int, FieldPath], list[Any]],
    selection: int,
) -> tuple[list[Any], dict[str, int]]:
    """The values of ``path`` in ``events`` that pass ``check``, in arrival order, and the
    reasons of the others (reason -> events). ``raws`` shares the raw values between two
    checks of one field (a sum and a histogram of one amount)."""
    top = path.top_property
    if check == STRING and top is not None:
        values: list[Any] = [v for e in events if type(v := e.properties.get(top)) is str]
        if len(values) == len(events):
            return values, {}
    raw = raws.get((selection, path))
    if raw is None:
        if top is not None:
            raw = [e.properties.get(top) for e in events]
        else:
            raw = [path.read(e) for e in events]
        raws[(selection, path)] = raw
    values = [v for v in raw if type(v) is str] if check == STRING else _numbers(raw, check)
    reasons: dict[str, int] = {}
    if len(values) != len(events):
        convert = _CONVERT[check]
        for value in raw:
            if convert(value) is None:
                reason = _reason(value, check)
                reasons[reason] = reasons.get(reason, 0) + 1
    return values, reasons


def _tally_of(slot: int, values: list[str], tallies: dict[int, dict[str, int]]) -> dict[str, int]:
    """The tally of an extraction's values, made once: a family and a unique of one field
    share it, the unique taking its keys (the distinct members)."""
    found = tallies.get(slot)
    if found is None:
        found = tallies[slot] = _tally(values)
    return found


@define
class BatchPlan:
    """The rules compiled for batches: which metrics take each event type (remembered per
    type as types are seen) and the drop rules."""

    rules: Rules
    specs: tuple[MetricSpec, ...] = field(init=False)
    _by_type: dict[str, tuple[int, ...]] = field(init=False, factory=dict)
    _dropped_types: dict[str, tuple[Match, ...]] = field(init=False, factory=dict)
    _programs: dict[tuple[str, ...], _Program] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.specs = self.rules.specs

    def specs_for(self, event_type: str) -> tuple[int, ...]:
        taken = self._by_type.get(event_type)
        if taken is None:
            taken = tuple(
                i for i, spec in enumerate(self.specs) if spec.when.takes_type(event_type)
            )
            if len(self._by_type) < _MAX_REMEMBERED_TYPES:
                self._by_type[event_type] = taken
        return taken

    def program(self, types: tuple[str, ...]) -> _Program:
        """The compiled work for a batch whose distinct types are ``types`` (in order of
        first arrival)."""
        program = self._programs.get(types)
        if program is None:
            program = _Program.of(self, types)
            if len(self._programs) < _MAX_REMEMBERED_TYPES:
                self._programs[types] = program
        return program

    @property
    def drops(self) -> bool:
        return bool(self.rules.drops)

    def drop_matches(self, event_type: str) -> tuple[Match, ...]:
        matches = self._dropped_types.get(event_type)
        if matches is None:
            matches = tuple(
                drop.when for drop in self.rules.drops if drop.when.takes_type(event_type)
            )
            if len(self._dropped_types) < _MAX_REMEMBERED_TYPES:
                self._dropped_types[event_type] = matches
        return matches

    def kept(self, events: Sequence[Event]) -> tuple[list[Event], int]:
        """The events no drop rule matches, in order, and how many were dropped."""
        kept = []
        for event in events:
            matches = self.drop_matches(event.type)
            if matches and any(_meets(match, event) for match in matches):
                continue
            kept.append(event)
        return kept, len(events) - len(kept)


# A few entries: tests build several rule sets; a daemon has one.
plan_for = lru_cache(maxsize=8)(BatchPlan)


def _filtered(condition: Condition, events: list[Event]) -> list[Event]:
    """The events whose field meets ``condition``, in order.

    Strings compared to strings (the usual ``where``) in one comprehension over a set:
    calling ``Condition.holds`` per event cost ~1.5 us each (benchmarks/README.md).
    """
    top = condition.field.top_property
    if top is not None:  # a top-level property: one comprehension over the events
        if condition.present is not None:  # the web preset's "has a utm_campaign"
            present = condition.present
            return [e for e in events if (e.properties.get(top) is not None) is present]
        if condition.strings is not None:
            strings = condition.strings
            return [e for e in events if e.properties.get(top) in strings]
        if condition.typed is not None:  # entry: true, visit_pageview: 2
            types, values = condition.typed
            return [e for e in events if type(v := e.properties.get(top)) in types and v in values]
    elif condition.strings is not None:
        read, strings = condition.field.read, condition.strings
        return [e for e in events if read(e) in strings]
    holds, read = condition.holds, condition.field.read
    return [e for e in events if holds(read(e))]


@lru_cache(maxsize=1024)
def _label_reads(spec: MetricSpec) -> tuple[tuple[str, str | None, FieldPath], ...]:
    """Per label of ``spec``: its ``label=`` key prefix, its top-level property (or None)
    and its path."""
    return tuple((f"{label}=", path.top_property, path) for label, path in spec.labels)


def _meets(match: Match, event: Event) -> bool:
    return all(condition.holds(condition.field.read(event)) for condition in match.where)


@frozen
class BatchSummary:
    """What one batch of events contributes: the generic figures, then per rule metric
    (by spec index) what its unlabelled metric takes (``totals``: events for a count,
    values in arrival order for a sum or histogram, distinct members for a unique, the
    latest (value, event time, values) for a gauge; None when nothing) and what its series take
    (``series``: key -> the same, keys in order of first arrival; None when nothing), and
    the events each rule skipped, by reason."""

    size: int
    types: dict[str, int]  # event type -> events, in order of first arrival
    users: list[str]  # distinct, in order of first arrival
    sessions: list[str]
    totals: list[Any]
    series: list[dict[str, Any] | None]
    skips: Skips
    # Per labelled sum, histogram, unique or gauge: its (key, value, event time) in arrival
    # order, for the ``__other__`` bucket when several series of the batch share it.
    arrivals: list[list[tuple[str, Any, float]] | None]

    @classmethod
    def of(cls, events: Sequence[Event], plan: BatchPlan) -> BatchSummary:
        types = [event.type for event in events]
        type_counts = _tally(types)
        specs = plan.specs
        totals: list[Any] = [None] * len(specs)
        series: list[dict[str, Any] | None] = [None] * len(specs)
        arrivals: list[list[tuple[str, Any, float]] | None] = [None] * len(specs)
        skips: Skips = {}
        if specs:
            program = plan.program(tuple(type_counts))
            _Gatherer(events, types, skips).run(program, totals, series, arrivals)
        return cls(
            size=len(events),
            types=type_counts,
            users=_distinct([event.user_id for event in events]),
            sessions=_distinct([event.session_id for event in events]),
            totals=totals,
            series=series,
            skips=skips,
            arrivals=arrivals,
        )


@frozen
class _Step:
    """One rule metric's work in a batch: its events (a selection slot) and, where it
    reads them through a shared extraction, the slots of its label's and value's."""

    index: int
    spec: MetricSpec
    selection: int
    label: int  # the single label's extraction, or -1
    value: int  # the value's extraction (the total of a sum, histogram or unique), or -1


@frozen
class _Program:
    """The rules compiled for batches of one combination of event types: the distinct
    event selections (a match and the batch's types it takes), the distinct extractions
    (a selection, a field, a check), and the steps in rule order. Made once per type
    combination, so a batch pays no per-rule lookups."""

    selections: tuple[tuple[Match, tuple[str, ...]], ...]
    extractions: tuple[tuple[int, FieldPath, str], ...]
    steps: tuple[_Step, ...]
    grouped: tuple[str, ...]  # the types some selection takes alone
    grouping_all: bool  # whether that is every type of the batch
    types: tuple[str, ...]  # the batch's types: what a selection of every type takes

    @classmethod
    def of(cls, plan: BatchPlan, types: tuple[str, ...]) -> _Program:
        selections: dict[tuple[Match, tuple[str, ...]], int] = {}
        extractions: dict[tuple[int, FieldPath, str], int] = {}
        steps = []
        taken_by = {t: set(plan.specs_for(t)) for t in types}
        for i, spec in enumerate(plan.specs):
            taken = tuple(t for t in types if i in taken_by[t])
            if not taken:
                continue
            selection = selections.setdefault((spec.when, taken), len(selections))
            label = value = -1
            if len(spec.labels) == 1:
                wanted = (selection, spec.labels[0][1], STRING)
                label = extractions.setdefault(wanted, len(extractions))
            if spec.total and spec.value is not None and spec.aggregation != "gauge":
                wanted = (selection, spec.value, _CHECK_OF[spec.aggregation])
                value = extractions.setdefault(wanted, len(extractions))
            steps.append(_Step(i, spec, selection, label, value))
        grouped = tuple(dict.fromkeys(taken[0] for _, taken in selections if len(taken) == 1))
        return cls(
            tuple(selections),
            tuple(extractions),
            tuple(steps),
            grouped,
            grouping_all=set(grouped) == set(types),
            types=types,
        )


class _Gatherer:
    """One batch's selections and extractions, each made once and shared by the metrics
    that need it, then each metric's contribution."""

    def __init__(self, events: Sequence[Event], types: list[str], skips: Skips) -> None:
        self.events = events
        self.types = types
        self.skips = skips

    def run(
        self,
        program: _Program,
        totals: list[Any],
        series: list[dict[str, Any] | None],
        arrivals: list[list[tuple[str, Any, float]] | None],
    ) -> None:
        events, types = self.events, self.types
        # The events of each type a selection takes alone, grouped in one pass (a pass per
        # type, even in C with compress, took twice as long).
        groups: dict[str, list[Event]] = {t: [] for t in program.grouped}
        if program.grouping_all:
            for event in events:
                groups[event.type].append(event)
        elif groups:
            for event in events:
                group = groups.get(event.type)
                if group is not None:
                    group.append(event)
        selected = []
        # Selections share their work: the events of a type set, and each filter of a
        # condition sequence's prefix, are found once (the web preset's selections all start
        # "any type, with a site": one pass, not one per selection).
        shared: dict[tuple[Any, ...], list[Event]] = {}
        for match, taken in program.selections:
            key: tuple[Any, ...] = (taken,)
            found = shared.get(key)
            if found is None:
                if len(taken) == 1:
                    found = groups[taken[0]]
                elif taken == program.types:  # every type of the batch
                    found = list(events)
                else:
                    wanted = set(taken)
                    found = [e for t, e in zip(types, events, strict=True) if t in wanted]
                shared[key] = found
            for condition in match.where:
                if not found:
                    break
                first = len(key) == 1
                key += (condition,)
                narrowed = shared.get(key)
                if narrowed is None:
                    # A first condition already applied to every event: its survivors of
                    # these types (none at all, for native events and "has a site").
                    wider = shared.get((program.types, condition)) if first else None
                    if wider is not None:
                        wanted = set(taken)
                        narrowed = [e for e in wider if e.type in wanted]
                    else:
                        narrowed = _filtered(condition, found)
                    shared[key] = narrowed
                found = narrowed
            selected.append(found)
        raws: dict[tuple[int, FieldPath], list[Any]] = {}
        nothing: tuple[list[Any], dict[str, int]] = ([], {})
        extracted = [
            _extract(selected[selection], path, check, raws, selection)
            if selected[selection]
            else nothing  # a selection that took no event (the site rules, for native events)
            for selection, path, check in program.extractions
        ]
        tallies: dict[int, dict[str, int]] = {}
        for step in program.steps:
            chosen = selected[step.selection]
            if not chosen:
                continue
            spec, i = step.spec, step.index
            aggregation = spec.aggregation
            if aggregation == "count":
                if spec.total:
                    totals[i] = len(chosen)
                if step.label >= 0:
                    keys = self._take(spec, extracted[step.label], MISSING_LABEL)
                    if keys:
                        series[i] = _tally_of(step.label, keys, tallies)
                elif spec.labels:
                    keys = self._label_keys(spec, chosen)
                    if keys:
                        series[i] = _tally(keys)
                continue
            check = _CHECK_OF[aggregation]
            gauge = aggregation == "gauge"
            if step.value >= 0:
                values = self._take(spec, extracted[step.value], MISSING)
                if values:
                    totals[i] = (
                        list(_tally_of(step.value, values, tallies)) if check == STRING else values
                    )
            elif gauge and spec.total:
                totals[i] = self._latest(spec, chosen, check)
            if spec.labels:
                order: list[tuple[str, Any, float]] = []
                series[i] = self._labelled(spec, chosen, check, gauge, order) or None
                arrivals[i] = order or None

    def _take(
        self, spec: MetricSpec, extraction: tuple[list[Any], dict[str, int]], missing: str
    ) -> list[Any]:
        """An extraction's values, its skips counted for ``spec``'s rule (``missing``:
        MISSING_LABEL when the field is a label)."""
        values, reasons = extraction
        for reason, n in reasons.items():
            if missing != MISSING:
                reason = MISSING_LABEL if reason == MISSING else MISTYPED_LABEL
            skip = (spec.rule, reason)
            self.skips[skip] = self.skips.get(skip, 0) + n
        return values

    def _label_keys(self, spec: MetricSpec, events: list[Event]) -> list[str]:
        """The series key of each event with all its labels, in arrival order."""
        reads = _label_reads(spec)
        if len(reads) == 2 and reads[0][1] is not None and reads[1][1] is not None:
            return self._pair_keys(spec, reads, events)
        keys = []
        for event in events:
            key = self._key_of(spec, event)
            if key is not None:
                keys.append(key)
        return keys

    def _pair_keys(
        self,
        spec: MetricSpec,
        reads: tuple[tuple[str, str | None, FieldPath], ...],
        events: list[Event],
    ) -> list[str]:
        """``_label_keys`` of two top-level properties (the web preset's site and source):
        one loop with the reads inlined, ~3x faster than a ``_key_of`` call per event."""
        (first, top1, _), (second, top2, _) = reads
        assert top1 is not None and top2 is not None
        keys = []
        for event in events:
            properties = event.properties
            a = properties.get(top1)
            b = properties.get(top2)
            if type(a) is not str or type(b) is not str:
                self._key_of(spec, event)  # counts the skip
                continue
            if "\\" in a or "," in a or "=" in a:
                a = escape_label_value(a)
            if "\\" in b or "," in b or "=" in b:
                b = escape_label_value(b)
            keys.append(f"{first}{a},{second}{b}")
        return keys

    def _key_of(self, spec: MetricSpec, event: Event) -> str | None:
        """The event's series key (see ``series_key``), or None (the skip counted) when a
        label is absent or not a string. Reads inlined and values escaped only when they
        need it: ~4 -> ~1.5 us a key of two labels."""
        reads = _label_reads(spec)
        parts = []
        for prefix, top, path in reads:
            value = event.properties.get(top) if top is not None else path.read(event)
            if type(value) is not str:
                self._skip(spec, MISSING_LABEL if value is None else MISTYPED_LABEL)
                return None
            if len(reads) == 1:
                return value
            if "\\" in value or "," in value or "=" in value:
                value = escape_label_value(value)
            parts.append(prefix + value)
        return ",".join(parts)

    def _value_of(self, spec: MetricSpec, event: Event, check: str) -> Any:
        assert spec.value is not None
        value = spec.value.read(event)
        converted = _CONVERT[check](value)
        if converted is None:
            self._skip(spec, _reason(value, check))
        return converted

    def _skip(self, spec: MetricSpec, reason: str) -> None:
        skip = (spec.rule, reason)
        self.skips[skip] = self.skips.get(skip, 0) + 1

    def _latest(self, spec: MetricSpec, events: list[Event], check: str) -> Any:
        """(value, event time, values) of the event with the latest time (the last to
        arrive among equal times) and how many values there were, or None."""
        latest = None
        for event in events:
            value = self._value_of(spec, event, check)
            if value is None:
                continue
            if latest is None:
                latest = (value, event.timestamp, 1)
            elif event.timestamp >= latest[1]:
                latest = (value, event.timestamp, latest[2] + 1)
            else:
                latest = (latest[0], latest[1], latest[2] + 1)
        return latest

    def _labelled(
        self,
        spec: MetricSpec,
        events: list[Event],
        check: str,
        gauge: bool,
        order: list[tuple[str, Any, float]],
    ) -> dict[str, Any]:
        """Key -> what the series takes (values, members, the latest gauge value),
        keys in order of first arrival. An event lacking the value or a label is skipped
        for the series; when the rule keeps a total, a value skip was counted there."""
        by_key: dict[str, Any] = {}
        counted = spec.total  # the total already counted the value skips
        assert spec.value is not None
        read, value_top = spec.value.read, spec.value.top_property
        convert = _CONVERT[check]
        # One top-level label (the web preset's site): read inline, no call per event.
        reads = _label_reads(spec)
        label_top = reads[0][1] if len(reads) == 1 else None
        for event in events:
            properties = event.properties
            raw = properties.get(value_top) if value_top is not None else read(event)
            value = convert(raw)
            if value is None:
                if not counted:
                    self._skip(spec, _reason(raw, check))
                continue
            key = properties.get(label_top) if label_top is not None else None
            if type(key) is not str:
                key = self._key_of(spec, event)  # several labels, a path, or a skip
                if key is None:
                    continue
            order.append((key, value, event.timestamp))
            if gauge:
                latest = by_key.get(key)
                if latest is None:
                    by_key[key] = (value, event.timestamp, 1)
                elif event.timestamp >= latest[1]:
                    by_key[key] = (value, event.timestamp, latest[2] + 1)
                else:
                    by_key[key] = (latest[0], latest[1], latest[2] + 1)
            else:
                by_key.setdefault(key, []).append(value)
        # A unique series keeps its repeated members: each is an event the series (or the
        # bucket, past the bound, counting overflow per event) took; a sketch ignores them.
        return by_key

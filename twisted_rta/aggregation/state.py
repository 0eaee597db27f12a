"""An aggregator's state as plain values: checkpoints (export/restore) and closed windows.

Everything here returns and accepts only dict, list, tuple, str, int, float, bytes, bool and
None, so any codec can carry it (``checkpoint/codec.py`` uses msgpack, which gives lists
back for tuples: every ``restore_*`` accepts either).

A checkpoint holds every piece of state that decides a future result: each metric set's
metrics in their order (which decides what a bounded counter family admits when the set is
merged into a coarser window), its family overflow counts and whether its generic metrics
are published; per resolution the open windows and late deltas in the order they were made,
``closed_through`` (without it a replayed old event would reopen a closed window and be
counted twice) and ``closed_overflow``; the late event count; ``started_at``.

A metric set is stored in columns: its names, one kind byte per metric, the counters packed
together (``scalars_to_bytes``) and each gauge's and sketch's ``to_bytes``; so exporting
10,000 counters makes a few objects, not 10,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import compress
from typing import Any

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import (
    Counter,
    Gauge,
    Histogram,
    Metric,
    Unique,
    kind_code,
    scalars_from_bytes,
    scalars_to_bytes,
)
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.windows import ClosedWindow

# The layout of export_aggregator's dict; restore refuses any other.
STATE_FORMAT = 1

_CLASSES: tuple[type[Metric], ...] = (Counter, Gauge, Histogram, Unique)
_CODE_OF: dict[type, int] = {cls: kind_code(cls.kind) for cls in _CLASSES}
_CLASS_OF: dict[int, type[Metric]] = {code: cls for cls, code in _CODE_OF.items()}
# Counters are packed in columns; a gauge (it carries an event time) is written like a sketch.
_SCALAR_CODES = frozenset((_CODE_OF[Counter],))
# bytes.translate tables: kind code -> 1 where the kind is a scalar (or a sketch), else 0.
_IS_SCALAR = bytes(int(code in _SCALAR_CODES) for code in range(256))
_IS_SKETCH = bytes(int(code in _CLASS_OF and code not in _SCALAR_CODES) for code in range(256))


class IncompatibleState(ValueError):
    """The state was exported by an aggregator built differently (window sizes, grace,
    dimension limit, sketch sizes or state format): loading it would be a guess. The rules
    may differ: they apply from the restart on (see ``MetricSet.load``)."""


# -- the aggregator ------------------------------------------------------------------------


def export_aggregator(aggregator: Aggregator) -> dict[str, Any]:
    """Everything ``restore_aggregator`` needs to rebuild ``aggregator`` exactly.

    Runs on the reactor thread each flush: it copies metric state into bytes and holds no
    reference to the aggregator's objects, so the result may be encoded later.
    """
    rollups = aggregator.rollups
    return {
        "format": STATE_FORMAT,
        **_shape(aggregator),
        "started_at": aggregator.started_at,
        "late_events": rollups.late_events,
        "global": _export_set(aggregator.global_set),
        "levels": [
            {
                "closed_through": level.closed_through,
                "closed_overflow": level.closed_overflow,
                "open": [[window.start, _export_set(window.metrics)] for window in open_],
                "late": [[window.start, _export_set(window.metrics)] for window in late],
            }
            for level in rollups.levels
            for open_, late in (level.held(),)
        ],
    }


def restore_aggregator(aggregator: Aggregator, state: Mapping[str, Any]) -> None:
    """Load ``state`` (from ``export_aggregator``) into ``aggregator``, freshly built from the
    config and never fed: it then behaves exactly as the exported one did.

    Raises IncompatibleState when ``aggregator`` is built differently from the exported one
    (saying what differs), ValueError when it is not fresh or ``state`` is malformed.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"aggregator state must be a mapping, not {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise IncompatibleState(
            f"aggregator state format {state.get('format')!r}, expected {STATE_FORMAT}"
        )
    _check_shape(_shape(aggregator), state)
    rollups = aggregator.rollups
    if (
        aggregator.global_set.metrics
        or aggregator.global_set.published
        or rollups.late_events
        or any(level.held() != ([], []) for level in rollups.levels)
        or any(level.closed_through != -math.inf for level in rollups.levels)
    ):
        raise ValueError("restore_aggregator needs a freshly built aggregator")
    try:
        levels = state["levels"]
        if len(levels) != len(rollups.levels):
            raise ValueError(f"{len(levels)} levels for {len(rollups.levels)} window sizes")
        _load_set(aggregator.global_set, state["global"])
        for level, level_state in zip(rollups.levels, levels, strict=True):
            for late, key in ((False, "open"), (True, "late")):
                for start, set_state in level_state[key]:
                    _load_set(level.hold(float(start), late=late).metrics, set_state)
            level.closed_through = float(level_state["closed_through"])
            level.closed_overflow = int(level_state["closed_overflow"])
        rollups.late_events = int(state["late_events"])
        aggregator.started_at = float(state["started_at"])
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"malformed aggregator state: {e!r}") from e


def _shape(aggregator: Aggregator) -> dict[str, Any]:
    """What a restore must agree on: what the aggregator was built with."""
    return {
        "window_sizes": list(aggregator.window_sizes),
        "grace": aggregator.grace,
        "max_dimension_values": aggregator.max_dimension_values,
        "global_lg_k": aggregator.global_lg_k,
        "window_lg_k": aggregator.window_lg_k,
    }


_SHAPE_NAMES = {
    "window_sizes": "window sizes",
    "grace": "grace",
    "max_dimension_values": "max_dimension_values",
    "global_lg_k": "all-time sketch lg_k",
    "window_lg_k": "window sketch lg_k",
}


def _check_shape(expected: dict[str, Any], state: Mapping[str, Any]) -> None:
    differences = []
    for key, name in _SHAPE_NAMES.items():
        theirs, ours = state.get(key), expected[key]
        if isinstance(theirs, tuple):
            theirs = list(theirs)
        if theirs != ours:
            differences.append(f"{name} {theirs!r}, not {ours!r}")
    if differences:
        raise IncompatibleState(
            "the state is of a differently built aggregator: " + "; ".join(differences)
        )


# -- closed windows ------------------------------------------------------------------------


def export_closed(windows: Sequence[ClosedWindow]) -> list[Any]:
    """Closed windows as plain values, one entry per window, in order."""
    return [
        [window.resolution, window.start, window.end, window.late, _export_metrics(window.metrics)]
        for window in windows
    ]


def restore_closed(data: Sequence[Any]) -> list[ClosedWindow]:
    """The windows ``export_closed`` exported (new metric objects the caller owns)."""
    try:
        return [
            ClosedWindow(
                float(resolution),
                float(start),
                float(end),
                dict(_restore_metrics(metrics)),
                late=bool(late),
            )
            for resolution, start, end, late, metrics in data
        ]
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"malformed closed window state: {e!r}") from e


# -- metric sets ---------------------------------------------------------------------------


def _export_set(metric_set: MetricSet) -> dict[str, Any]:
    state = _export_metrics(metric_set.metrics)
    state["overflow"] = {
        base: overflow for base, overflow in metric_set.overflow_by_base().items() if overflow
    }
    state["published"] = metric_set.published
    return state


def _load_set(metric_set: MetricSet, state: Mapping[str, Any]) -> None:
    metric_set.load(
        _restore_metrics(state),
        {str(base): int(n) for base, n in state["overflow"].items()},
        published=bool(state["published"]),
    )


def _export_metrics(metrics: Mapping[str, Metric]) -> dict[str, Any]:
    """A name -> metric map in columns, order kept: names, one kind byte each, the packed
    counters, and each gauge's, histogram's and unique's ``to_bytes``."""
    values = list(metrics.values())
    kinds = bytes(map(_CODE_OF.__getitem__, map(type, values)))
    scalars: list[Any] = list(compress(values, kinds.translate(_IS_SCALAR)))
    return {
        "names": list(metrics),
        "kinds": kinds,
        "scalars": scalars_to_bytes(scalars),
        "sketches": [metric.to_bytes() for metric in compress(values, kinds.translate(_IS_SKETCH))],
    }


def _restore_metrics(state: Mapping[str, Any]) -> list[tuple[str, Metric]]:
    names: list[str] = state["names"]
    kinds = bytes(state["kinds"])
    if len(names) != len(kinds):
        raise ValueError(f"{len(names)} metric names for {len(kinds)} kinds")
    unknown = set(kinds) - _CLASS_OF.keys()
    if unknown:
        raise ValueError(f"unknown metric kind code {min(unknown)}")
    classes: list[Any] = [_CLASS_OF[code] for code in compress(kinds, kinds.translate(_IS_SCALAR))]
    scalars = iter(scalars_from_bytes(classes, bytes(state["scalars"])))
    sketch_data: list[bytes] = state["sketches"]
    sketches = iter(sketch_data)
    if len(sketch_data) != len(kinds) - len(classes):
        raise ValueError(f"{len(sketch_data)} sketches for {len(kinds) - len(classes)} metrics")
    restored: list[tuple[str, Metric]] = []
    for name, code in zip(names, kinds, strict=True):
        if code in _SCALAR_CODES:
            restored.append((name, next(scalars)))
        else:
            restored.append((name, _CLASS_OF[code].from_bytes(bytes(next(sketches)))))
    return restored

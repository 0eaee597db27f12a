"""Metric kinds (Counter, Gauge, Histogram, Unique): update, merge, snapshot, serialise."""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import reduce
from operator import add
from typing import Any, ClassVar, Self

from attrs import define, field, frozen
from datasketches import hll_sketch, hll_union, kll_doubles_sketch, tgt_hll_type

# Serialised form: version byte, kind byte, then the kind's payload. The kind byte stops
# a stored counter from silently decoding as a gauge (same numeric layout).
_VERSION = 1
_HEADER = struct.Struct("<BB")
_SCALAR = struct.Struct("<BBdqd")  # header, value, count, updated_at
_HISTOGRAM = struct.Struct("<BBqdddd")  # header, count, sum, min, max, updated_at; then KLL
_UNIQUE = struct.Struct("<BBd")  # header, updated_at; then HLL
_GAUGE = struct.Struct("<BBdqdd")  # header, value, count, updated_at, event time of the value
_KIND_CODES = ("counter", "gauge", "histogram", "set")

DEFAULT_KLL_K = 200
DEFAULT_LG_K = 14
HISTOGRAM_QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _header(kind: str) -> tuple[int, int]:
    return _VERSION, _KIND_CODES.index(kind) + 1


def _check_header(data: bytes, kind: str, minimum: int) -> None:
    if len(data) < _HEADER.size:
        raise ValueError(f"{kind} data too short: {len(data)} bytes")
    version, code = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unsupported {kind} serialisation version {version}")
    if code != _KIND_CODES.index(kind) + 1:
        raise ValueError(f"data holds kind code {code}, not a {kind}")
    if len(data) < minimum:
        raise ValueError(f"{kind} data too short: {len(data)} bytes")


def _check_same_kind(metric: Metric, other: object) -> None:
    if type(other) is not type(metric):
        raise TypeError(f"cannot merge {type(other).__name__} into {type(metric).__name__}")


@frozen
class MetricSnapshot:
    """A point-in-time, immutable view of one metric, as the query API shows it.

    The histogram fields are None for other kinds, and min/max/mean/quantiles are None
    for an empty histogram.
    """

    name: str
    type: str
    value: float
    count: int
    updated_at: float
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    def as_dict(self, format_time: Callable[[float], str]) -> dict[str, Any]:
        """The API object; key order is part of the public output."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "value": self.value,
            "count": self.count,
            "timestamp": format_time(self.updated_at),
        }
        if self.type == Histogram.kind:
            out["sum"] = self.sum
            out["min"] = self.min
            out["max"] = self.max
            out["mean"] = self.mean
            out["p50"] = self.p50
            out["p90"] = self.p90
            out["p95"] = self.p95
            out["p99"] = self.p99
        return out


@define
class _Scalar:
    """A value, how many updates, and when (the state of a Counter)."""

    kind: ClassVar[str]
    code: ClassVar[int]  # the kind's code in the serialised header
    value: float = 0.0
    count: int = 0
    updated_at: float = 0.0

    def snapshot(self, name: str) -> MetricSnapshot:
        return MetricSnapshot(name, self.kind, self.value, self.count, self.updated_at)

    def to_bytes(self) -> bytes:
        # The header's kind code is a class constant: a flush serialises ~30k counters on
        # the reactor thread, and looking it up was half of each (0.35 -> 0.18 us).
        return _SCALAR.pack(_VERSION, self.code, self.value, self.count, self.updated_at)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _check_header(data, cls.kind, _SCALAR.size)
        _, _, value, count, updated_at = _SCALAR.unpack(data)
        return cls(value=value, count=count, updated_at=updated_at)

    def copy(self) -> Self:
        # Positional: half the cost of keywords, and a flush copies every changed counter
        # (~30k at full ingest) on the reactor thread.
        return type(self)(self.value, self.count, self.updated_at)


@define
class Counter(_Scalar):
    """A running total; ``count`` is the number of contributions, ``value`` their sum."""

    kind: ClassVar[str] = "counter"
    code: ClassVar[int] = _KIND_CODES.index("counter") + 1

    def increment(self, now: float, by: float = 1.0) -> None:
        self.value += by
        self.count += 1
        self.updated_at = now

    def increment_times(self, n: int, now: float) -> None:
        """``n`` increments of 1 at once (the same value: sums of ones are exact floats)."""
        self.value += float(n)
        self.count += n
        self.updated_at = now

    def increment_each(self, amounts: Sequence[float], now: float) -> None:
        """One increment per amount, added left to right so the float total is bit for bit
        the one of adding them one by one (``sum`` compensates rounding from Python 3.12)."""
        self.value = reduce(add, amounts, self.value)
        self.count += len(amounts)
        self.updated_at = now

    def merge(self, other: Counter) -> None:
        _check_same_kind(self, other)
        self.value += other.value
        self.count += other.count
        self.updated_at = max(self.updated_at, other.updated_at)


@define
class Gauge:
    """The value with the latest event time (``at``); ``count`` is how many values were
    set. On equal times the value set (or merged in) later wins. ``updated_at`` is when it
    last changed, in processing time, like every metric's (incremental storage reads it).
    """

    kind: ClassVar[str] = "gauge"
    code: ClassVar[int] = _KIND_CODES.index("gauge") + 1
    value: float = 0.0
    count: int = 0
    updated_at: float = 0.0
    at: float = -math.inf

    def set(self, value: float, now: float, at: float | None = None) -> None:
        """Set ``value`` observed at event time ``at`` (``now`` when not given), unless the
        gauge holds a later one."""
        at = now if at is None else at
        if at >= self.at:
            self.value = value
            self.at = at
        self.count += 1
        self.updated_at = now

    def set_latest(self, value: float, at: float, values: int, now: float) -> None:
        """``values`` settings at once, ``value`` at ``at`` the latest of them: the result of
        setting them one by one."""
        if at >= self.at:
            self.value = value
            self.at = at
        self.count += values
        self.updated_at = now

    def merge(self, other: Gauge) -> None:
        """Keep the value of the later event time; on a tie ``other`` wins, as it is the
        newer data merged in."""
        _check_same_kind(self, other)
        if other.at >= self.at:
            self.value = other.value
            self.at = other.at
        self.count += other.count
        self.updated_at = max(self.updated_at, other.updated_at)

    def snapshot(self, name: str) -> MetricSnapshot:
        return MetricSnapshot(name, self.kind, self.value, self.count, self.updated_at)

    def to_bytes(self) -> bytes:
        return _GAUGE.pack(_VERSION, self.code, self.value, self.count, self.updated_at, self.at)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _check_header(data, cls.kind, _GAUGE.size)
        _, _, value, count, updated_at, at = _GAUGE.unpack(data)
        return cls(value, count, updated_at, at)

    def copy(self) -> Self:
        return type(self)(self.value, self.count, self.updated_at, self.at)


@define
class Histogram:
    """A KLL quantile sketch (bounded memory) plus exact count, sum, min and max.

    ``value`` is the sum, as in the seed service.
    """

    kind: ClassVar[str] = "histogram"
    sketch: kll_doubles_sketch = field(factory=lambda: kll_doubles_sketch(DEFAULT_KLL_K))
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    updated_at: float = 0.0

    @classmethod
    def with_k(cls, k: int) -> Self:
        return cls(sketch=kll_doubles_sketch(k))

    @property
    def value(self) -> float:
        return self.sum

    def observe(self, x: float, now: float) -> None:
        # A NaN or infinity would poison sum/mean forever; rules already filter them.
        if not math.isfinite(x):
            raise ValueError(f"histogram observation must be finite, got {x!r}")
        self.sketch.update(x)
        self.count += 1
        self.sum += x
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        self.updated_at = now

    def observe_all(self, xs: Sequence[float], now: float) -> None:
        """``observe`` each of ``xs`` (at least one), in order: the same sketch, count, sum
        (added left to right), min and max; all or nothing when one is not finite."""
        if not all(map(math.isfinite, xs)):
            raise ValueError(f"histogram observations must be finite, got {list(xs)!r}")
        update = self.sketch.update
        for x in xs:
            update(x)
        self.count += len(xs)
        self.sum = reduce(add, xs, self.sum)
        self.min = min(self.min, min(xs))
        self.max = max(self.max, max(xs))
        self.updated_at = now

    def merge(self, other: Histogram) -> None:
        _check_same_kind(self, other)
        self.sketch.merge(other.sketch)
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.updated_at = max(self.updated_at, other.updated_at)

    def snapshot(self, name: str) -> MetricSnapshot:
        if self.count == 0:
            return MetricSnapshot(name, self.kind, self.sum, 0, self.updated_at, sum=self.sum)
        p50, p90, p95, p99 = (self.sketch.get_quantile(q, True) for q in HISTOGRAM_QUANTILES)
        return MetricSnapshot(
            name,
            self.kind,
            self.sum,
            self.count,
            self.updated_at,
            sum=self.sum,
            min=self.min,
            max=self.max,
            mean=self.sum / self.count,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
        )

    def to_bytes(self) -> bytes:
        head = _HISTOGRAM.pack(
            *_header(self.kind), self.count, self.sum, self.min, self.max, self.updated_at
        )
        return head + self.sketch.serialize()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _check_header(data, cls.kind, _HISTOGRAM.size)
        _, _, count, total, low, high, updated_at = _HISTOGRAM.unpack_from(data)
        sketch = kll_doubles_sketch.deserialize(bytes(data[_HISTOGRAM.size :]))
        return cls(sketch=sketch, count=count, sum=total, min=low, max=high, updated_at=updated_at)

    def copy(self) -> Self:
        return type(self)(
            sketch=kll_doubles_sketch.deserialize(self.sketch.serialize()),
            count=self.count,
            sum=self.sum,
            min=self.min,
            max=self.max,
            updated_at=self.updated_at,
        )


@define
class Unique:
    """Distinct members, estimated by an HLL_8 sketch of 2**lg_k registers (bounded memory)."""

    kind: ClassVar[str] = "set"
    sketch: hll_sketch = field(factory=lambda: hll_sketch(DEFAULT_LG_K, tgt_hll_type.HLL_8))
    updated_at: float = 0.0

    @classmethod
    def with_lg_k(cls, lg_k: int) -> Self:
        return cls(sketch=hll_sketch(lg_k, tgt_hll_type.HLL_8))

    @property
    def lg_k(self) -> int:
        return int(self.sketch.lg_config_k)

    @property
    def estimate(self) -> int:
        return round(self.sketch.get_estimate())

    def add(self, member: str, now: float) -> None:
        self.sketch.update(member)
        self.updated_at = now

    def add_all(self, members: Iterable[str], now: float) -> None:
        """``add`` each member, in order; call it with at least one member."""
        update = self.sketch.update
        for member in members:
            update(member)
        self.updated_at = now

    def merge(self, other: Unique) -> None:
        """Union at this sketch's lg_k (the union keeps the smaller lg_k of the two)."""
        _check_same_kind(self, other)
        union = hll_union(self.lg_k)
        union.update(self.sketch)
        union.update(other.sketch)
        self.sketch = union.get_result(tgt_hll_type.HLL_8)
        self.updated_at = max(self.updated_at, other.updated_at)

    def snapshot(self, name: str) -> MetricSnapshot:
        n = self.estimate
        return MetricSnapshot(name, self.kind, float(n), n, self.updated_at)

    def to_bytes(self) -> bytes:
        return _UNIQUE.pack(*_header(self.kind), self.updated_at) + self.sketch.serialize_compact()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        _check_header(data, cls.kind, _UNIQUE.size)
        _, _, updated_at = _UNIQUE.unpack_from(data)
        sketch = hll_sketch.deserialize(bytes(data[_UNIQUE.size :]))
        return cls(sketch=sketch, updated_at=updated_at)

    def copy(self) -> Self:
        # The sketch objects cannot be pickled or copied; a serialise round trip is exact.
        sketch = hll_sketch.deserialize(self.sketch.serialize_updatable())
        return type(self)(sketch=sketch, updated_at=self.updated_at)


Metric = Counter | Gauge | Histogram | Unique


def metric_class(kind: str) -> type[Metric]:
    match kind:
        case "counter":
            return Counter
        case "gauge":
            return Gauge
        case "histogram":
            return Histogram
        case "set":
            return Unique
    raise ValueError(f"unknown metric kind {kind!r}")


def metric_from_bytes(kind: str, data: bytes) -> Metric:
    """Decode a metric stored with ``to_bytes``; ``kind`` is the stored ``kind`` string."""
    return metric_class(kind).from_bytes(data)


def kind_code(kind: str) -> int:
    """The kind byte ``to_bytes`` writes for ``kind`` (1 counter, 2 gauge, 3 histogram, 4 set)."""
    return _KIND_CODES.index(kind) + 1


def scalars_to_bytes(metrics: Sequence[Counter]) -> bytes:
    """The state of many counters at once, for checkpoints: three little-endian
    columns of ``len(metrics)`` entries (value float64, count int64, updated_at float64).

    The bulk form of ``to_bytes``: a few C loops instead of a call and a bytes object per
    metric. The kinds are not recorded: ``scalars_from_bytes`` is told them.
    """
    columns = (
        array("d", [metric.value for metric in metrics]),
        array("q", [metric.count for metric in metrics]),
        array("d", [metric.updated_at for metric in metrics]),
    )
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        for column in columns:
            column.byteswap()
    return b"".join(column.tobytes() for column in columns)


def scalars_from_bytes(classes: Sequence[type[Counter]], data: bytes) -> list[Counter]:
    """New metrics of ``classes`` (one per entry) from ``scalars_to_bytes`` data."""
    n = len(classes)
    if len(data) != 24 * n:
        raise ValueError(f"scalar data holds {len(data)} bytes, not 24 x {n}")
    values, counts, times = array("d"), array("q"), array("d")
    view = memoryview(data)
    values.frombytes(view[: 8 * n])
    counts.frombytes(view[8 * n : 16 * n])
    times.frombytes(view[16 * n :])
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        for column in (values, counts, times):
            column.byteswap()
    return [
        cls(value, count, updated_at)
        for cls, value, count, updated_at in zip(classes, values, counts, times, strict=True)
    ]


OTHER = "__other__"


@define
class CounterFamily:
    """Counters named ``<base>:<value>`` with at most ``limit`` distinct values.

    Unbounded client-chosen values (page paths, element ids) would otherwise grow memory
    and the metric list without limit; values past the limit share ``<base>:__other__``
    and every event routed there counts one ``overflow``. ``__other__`` is reserved for
    that bucket (a literal ``__other__`` value lands in it too), so a merged or restored
    bucket is never mistaken for a value. New counters are published into ``registry``
    (the owner's name -> metric map) as they appear.
    """

    base: str
    limit: int
    registry: dict[str, Metric]
    overflow: int = 0
    _by_value: dict[str, Counter] = field(factory=dict)
    _other: Counter | None = None

    @property
    def other_name(self) -> str:
        return f"{self.base}:{OTHER}"

    def increment(self, value: str, now: float, by: float = 1.0) -> None:
        counter = self._by_value.get(value)
        if counter is None:
            counter = self._new_counter(value)
        counter.increment(now, by)

    def increment_counts(self, counts: Mapping[str, int], now: float) -> None:
        """``increment`` each value ``n`` times (value -> n). New values are admitted in the
        mapping's order, so pass them in arrival order; a value routed to the bucket counts
        ``n`` overflow, as ``n`` single increments would."""
        get = self._by_value.get
        for value, n in counts.items():
            counter = get(value)
            if counter is None:
                counter = self._new_counter(value, n)
            # Counter.increment_times inlined: this runs per value and set (-0.1 us/event).
            counter.value += float(n)
            counter.count += n
            counter.updated_at = now

    def take_counts(self, source: CounterFamily, taken: dict[str, int]) -> None:
        """Count what ``source`` has counted beyond ``taken`` (value -> count already taken,
        updated here) as if each value's increments were made here, in ``source``'s order of
        admission, at the time of its last one (``now`` only moves forward, so that is the
        latest time of the counter it lands in). Its bucket is not taken: what that holds
        is counted here directly."""
        get = self._by_value.get
        for value, counter in source._by_value.items():
            n = counter.count - taken.get(value, 0)
            if n:
                taken[value] = counter.count
                own = get(value)
                if own is None:
                    own = self._new_counter(value, n)
                own.value += float(n)
                own.count += n
                # The bucket takes many values: its time is the latest of theirs.
                own.updated_at = max(own.updated_at, counter.updated_at)

    def unheld(self, counts: Mapping[str, int]) -> dict[str, int]:
        """The entries of ``counts`` whose value has no counter of its own here (they went to
        the bucket), in order."""
        held = self._by_value
        return {value: n for value, n in counts.items() if value not in held}

    def merge(self, value: str, counter: Counter) -> None:
        """Merge another family's counter for ``value``, bounded like ``increment``; the
        counter is copied, never shared, and everything it routes to the bucket counts
        ``counter.count`` overflow."""
        own = self._by_value.get(value)
        if own is None:
            if value != OTHER and len(self._by_value) < self.limit:
                self.adopt(value, counter.copy())
                return
            self.overflow += counter.count
            own = self._other_counter()
        own.merge(counter)

    def adopt(self, value: str, counter: Counter) -> None:
        """Track ``counter`` as is (restored or copied); it may exceed the limit."""
        if value == OTHER:
            self._other = counter
            self.registry[self.other_name] = counter
            return
        self._by_value[value] = counter
        self.registry[f"{self.base}:{value}"] = counter

    def _new_counter(self, value: str, events: int = 1) -> Counter:
        if value != OTHER and len(self._by_value) < self.limit:
            counter = Counter()
            self.adopt(value, counter)
            return counter
        self.overflow += events
        return self._other_counter()

    def _other_counter(self) -> Counter:
        if self._other is None:
            self._other = Counter()
            self.registry[self.other_name] = self._other
        return self._other


@define
class SeriesFamily:
    """Metrics of one kind named ``<base>:<key>``, at most ``limit`` keys: a labelled rule
    metric's series (sums, histograms, uniques, gauges; labelled counts use
    ``CounterFamily``). Keys past the limit share ``<base>:__other__``, and every
    contribution routed there counts one ``overflow``. New series are published into
    ``registry`` as they appear; ``new`` makes an empty metric of the family's kind."""

    base: str
    limit: int
    registry: dict[str, Metric]
    new: Callable[[], Metric]
    overflow: int = 0
    _by_key: dict[str, Metric] = field(factory=dict)
    _other: Metric | None = None

    @property
    def other_name(self) -> str:
        return f"{self.base}:{OTHER}"

    @property
    def bucket(self) -> Metric | None:
        """The ``__other__`` series, once something went there."""
        return self._other

    def series(self, key: str, contributions: int) -> Metric:
        """The metric ``key``'s ``contributions`` go to: its own, or the bucket."""
        metric = self._by_key.get(key)
        if metric is not None:
            return metric
        if key != OTHER and len(self._by_key) < self.limit:
            metric = self.new()
            self.adopt(key, metric)
            return metric
        self.overflow += contributions
        return self._other_metric()

    def merge(self, key: str, metric: Metric, copy: Callable[[Metric], Metric]) -> None:
        """Merge another family's series ``key``, bounded like ``series``; ``copy`` makes
        this family's own metric of it (nothing of ``metric`` is shared)."""
        own = self._by_key.get(key)
        if own is None:
            if key != OTHER and len(self._by_key) < self.limit:
                self.adopt(key, copy(metric))
                return
            # A merged sketch counts as one contribution: its members cannot be counted.
            self.overflow += 1 if isinstance(metric, Unique) else metric.count
            own = self._other_metric()
        own.merge(metric)  # type: ignore[arg-type]  # merge checks the kind

    def adopt(self, key: str, metric: Metric) -> None:
        """Track ``metric`` as is (restored or copied); it may exceed the limit."""
        if key == OTHER:
            self._other = metric
            self.registry[self.other_name] = metric
            return
        self._by_key[key] = metric
        self.registry[f"{self.base}:{key}"] = metric

    def _other_metric(self) -> Metric:
        if self._other is None:
            self._other = self.new()
            self.registry[self.other_name] = self._other
        return self._other

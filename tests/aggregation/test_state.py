"""Export/restore of an aggregator: the restored one is indistinguishable from the original.

The main property: feed a prefix of an event stream to A, restore A's export into a fresh B,
feed the rest to both; every window either emits, every all-time metric and every reading
is the same, down to the sketch bytes. (KLL compaction draws random bits, so two histograms
given the same values agree exactly only below ~300 values: the generated streams stay
below; ``test_large_histograms_...`` covers the rest.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, composite

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Metric, Unique, metric_from_bytes
from twisted_rta.aggregation.state import (
    IncompatibleState,
    export_aggregator,
    export_closed,
    restore_aggregator,
    restore_closed,
)
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.events.model import Event

DEFAULT_SIZES = (60.0, 3600.0, 86400.0)
SMALL_SIZES = (10.0, 60.0, 300.0)

PROPERTY = settings(
    derandomize=True,
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def build(
    sizes: Sequence[float] = DEFAULT_SIZES,
    *,
    grace: float = 5.0,
    max_dimension_values: int = 3,
    started_at: float = T0,
    window_lg_k: int = 12,
) -> Aggregator:
    return Aggregator(
        window_sizes=sizes,
        grace=grace,
        max_dimension_values=max_dimension_values,
        started_at=started_at,
        window_lg_k=window_lg_k,
    )


def via_msgpack(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint file gives back: tuples come back as lists."""
    decoded: dict[str, Any] = msgspec.msgpack.decode(msgspec.msgpack.encode(state))
    return decoded


def restored(original: Aggregator, *, transport: str = "memory") -> Aggregator:
    state = export_aggregator(original)
    if transport == "msgpack":
        state = via_msgpack(state)
    twin = build(
        original.window_sizes,
        grace=original.grace,
        max_dimension_values=original.max_dimension_values,
        started_at=0.0,
    )
    restore_aggregator(twin, state)
    return twin


def canonical(metric: Metric) -> Any:
    """A metric's whole state, comparable: its bytes, except for a unique's. An HLL sketch
    in its small (coupon set) mode serialises its coupons in hash table order, which a
    deserialised copy lays out differently: same set, other bytes."""
    if isinstance(metric, Unique):
        sketch = metric.sketch
        bounds = [sketch.get_lower_bound(n) for n in (1, 2, 3)]
        bounds += [sketch.get_upper_bound(n) for n in (1, 2, 3)]
        return (metric.updated_at, sketch.to_string(), sketch.get_estimate(), bounds)
    return metric.to_bytes()


def metric_bytes(metrics: dict[str, Metric] | Any) -> list[tuple[str, str, Any]]:
    """Name, kind and (canonical) state of each metric, in the map's order."""
    return [(name, metric.kind, canonical(metric)) for name, metric in metrics.items()]


def canonical_state(value: Any) -> Any:
    """An ``export_*`` value with every sketch decoded to its canonical form."""
    if isinstance(value, dict):
        value = {key: canonical_state(item) for key, item in value.items()}
        if "sketches" in value:
            kinds = [k for k in value["kinds"] if k > 2]
            value["sketches"] = [
                canonical(metric_from_bytes(("histogram", "set")[k - 3], data))
                for k, data in zip(kinds, value["sketches"], strict=True)
            ]
        return value
    if isinstance(value, list | tuple):
        return [canonical_state(item) for item in value]
    return value


def closed_view(windows: Sequence[ClosedWindow]) -> list[tuple[Any, ...]]:
    return [
        (w.resolution, w.start, w.end, w.late, w.snapshot().metrics, metric_bytes(w.metrics))
        for w in windows
    ]


def live_view(agg: Aggregator) -> dict[float, Any]:
    return {
        size: {
            start: metric_bytes(metrics)
            for start, metrics in agg.live_windows(size, -math.inf, math.inf).items()
        }
        for size in agg.window_sizes
    }


def assert_same(a: Aggregator, b: Aggregator, now: float) -> None:
    assert canonical_state(export_aggregator(b)) == canonical_state(export_aggregator(a))
    assert b.metrics() == a.metrics()
    assert metric_bytes(b.global_metric_states()) == metric_bytes(a.global_metric_states())
    assert b.stats(now) == a.stats(now)
    assert b.open_windows() == a.open_windows()
    assert live_view(b) == live_view(a)


# -- the property --------------------------------------------------------------------------

TYPES = ("pageview", "click", "purchase", "signup", "logout")
PAGES = tuple(f"/p{i}" for i in range(6))
ELEMENTS = ("buy", "menu", "logo", "__other__")
# Enough for the unique sketches to leave their list mode for the coupon set mode.
USERS = tuple(f"u{i}" for i in range(40))


@composite
def batch(draw: DrawFn, now: float, reach: float) -> list[Event]:
    """Events around ``now``: most recent, some up to ``reach`` seconds old (late)."""
    events = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(TYPES))
        properties: dict[str, Any] = {}
        if kind == "pageview":
            properties["page"] = draw(st.sampled_from(PAGES))
        elif kind == "click":
            properties["element"] = draw(st.sampled_from(ELEMENTS))
        elif kind == "purchase":
            properties["amount"] = draw(st.floats(0, 500))
        age = draw(st.one_of(st.floats(-2, 15), st.floats(0, reach)))
        events.append(
            event(
                kind,
                now - age,
                draw(st.none() | st.sampled_from(USERS)),
                draw(st.none() | st.sampled_from(("s1", "s2"))),
                properties,
            )
        )
    return events


Step = tuple[str, float, list[Event]]  # ("add" | "close", now, events)


@composite
def streams(draw: DrawFn, sizes: Sequence[float]) -> tuple[list[Step], int]:
    """Steps of adds and closes at a rising ``now``, and where to take the checkpoint."""
    now = T0 + draw(st.floats(0, sizes[1]))
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 14))):
        now += draw(st.floats(0, sizes[1] / 3))
        if draw(st.booleans()):
            steps.append(("add", now, draw(batch(now, sizes[1] * 2))))
        else:
            steps.append(("close", now, []))
    return steps, draw(st.integers(0, len(steps)))


def run(agg: Aggregator, step: Step) -> list[ClosedWindow]:
    kind, now, events = step
    if kind == "add":
        agg.add_many(events, now)
        return []
    return agg.close_due(now)


@pytest.mark.parametrize("transport", ["memory", "msgpack"])
@pytest.mark.parametrize("sizes", [DEFAULT_SIZES, SMALL_SIZES], ids=["default", "small"])
def test_a_restored_aggregator_behaves_exactly_like_the_original(
    sizes: tuple[float, ...], transport: str
) -> None:
    @PROPERTY
    @given(streams(sizes))
    def check(stream: tuple[list[Step], int]) -> None:
        steps, split = stream
        a = build(sizes)
        for step in steps[:split]:
            run(a, step)
        b = restored(a, transport=transport)
        now = steps[split - 1][1] if split else T0
        assert_same(a, b, now)
        for step in steps[split:]:
            assert closed_view(run(b, step)) == closed_view(run(a, step))
            now = step[1]
        assert_same(a, b, now)
        end = now + sizes[-1]
        assert closed_view(b.close_all(end)) == closed_view(a.close_all(end))
        assert_same(a, b, end)
        # and data after the shutdown close stays late in both
        late = [event("pageview", now, "u9", "s9", {"page": "/late"})]
        a.add_many(late, end)
        b.add_many(late, end)
        assert closed_view(b.close_due(end + 1)) == closed_view(a.close_due(end + 1))
        assert_same(a, b, end + 1)

    check()


# -- the pieces of state, one by one -------------------------------------------------------


def test_closed_through_survives_so_a_replayed_event_is_late_not_a_reopened_window() -> None:
    a = build()
    a.add(event("pageview", T0 + 1, "u1", properties={"page": "/a"}), T0 + 1)
    [minute] = a.close_due(T0 + 60 + 5)
    assert (minute.start, minute.late) == (T0, False)
    b = restored(a)
    assert [w.resolution for w in b.open_windows()] == [3600.0]  # the day fills later
    old = event("pageview", T0 + 2, "u1", properties={"page": "/a"})
    b.add(old, T0 + 70)
    [delta] = b.close_due(T0 + 71)
    assert (delta.resolution, delta.start, delta.late, delta.events_count) == (60.0, T0, True, 1)
    assert b.stats(T0 + 71).late_events == 1


def test_late_deltas_overflow_late_events_and_uptime_survive() -> None:
    a = build(max_dimension_values=1, started_at=T0 - 100)
    a.add_many([event("pageview", T0, properties={"page": p}) for p in "abc"], T0)
    a.close_due(T0 + 65)
    a.add_many([event("pageview", T0 + 3, properties={"page": p}) for p in "xy"], T0 + 66)
    stats = a.stats(T0 + 66)
    assert stats.late_events == 2
    assert stats.dimension_overflow_by_base["page_views"] == 4  # b, c, x, y
    assert stats.window_dimension_overflow > 0
    b = restored(a)
    assert b.started_at == T0 - 100
    assert b.stats(T0 + 66) == stats
    assert b.stats(T0 + 66).uptime_seconds == 166
    # the late delta is still pending, and leaves exactly once
    assert closed_view(b.close_due(T0 + 67)) == closed_view(a.close_due(T0 + 67))
    assert b.close_due(T0 + 68) == [] == a.close_due(T0 + 68)


def test_dimension_admission_order_survives_into_rollups() -> None:
    # The minute window admitted /b then /a; merged into the hour the same two are admitted,
    # whatever a sorted restore would have said.
    a = build(max_dimension_values=2)
    pages = ["/b", "/a", "/c", "/b"]
    a.add_many([event("pageview", T0 + i, properties={"page": p}) for i, p in enumerate(pages)], T0)
    b = restored(a)
    assert closed_view(b.close_all(T0 + 10)) == closed_view(a.close_all(T0 + 10))


def test_empty_aggregator_round_trips() -> None:
    a = build()
    b = restored(a, transport="msgpack")
    assert_same(a, b, T0)
    assert b.metrics() == {} and b.close_all(T0) == []


def test_large_histograms_agree_up_to_kll_randomness() -> None:
    a = build()
    amounts = [float(i % 997) for i in range(3000)]
    a.add_many([event("purchase", T0 + 1, properties={"amount": x}) for x in amounts], T0 + 1)
    b = restored(a)
    assert_same(a, b, T0 + 1)  # the sketch bytes, exactly
    more = [event("purchase", T0 + 2, properties={"amount": x * 1.5}) for x in amounts]
    a.add_many(more, T0 + 2)
    b.add_many(more, T0 + 2)
    for x, y in [(a.metric("revenue_histogram"), b.metric("revenue_histogram"))]:
        assert x is not None and y is not None
        assert (x.count, x.sum, x.min, x.max) == (y.count, y.sum, y.min, y.max)
        assert x.p50 is not None and y.p50 is not None
        assert abs(x.p50 - y.p50) < 0.05 * 1500  # both within KLL's rank error of the truth


def test_large_uniques_agree_exactly() -> None:
    # Past the coupon modes: the sketches are in HLL mode when the checkpoint is taken.
    a = build()
    a.add_many([event("signup", T0 + 1, f"user{i}", f"s{i}") for i in range(5000)], T0 + 1)
    b = restored(a, transport="msgpack")
    more = [event("signup", T0 + 2, f"other{i}", f"s{i}") for i in range(3000)]
    a.add_many(more, T0 + 2)
    b.add_many(more, T0 + 2)
    assert_same(a, b, T0 + 2)
    assert closed_view(b.close_all(T0 + 90000)) == closed_view(a.close_all(T0 + 90000))


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": (60.0, 3600.0)}, "window sizes [60.0, 3600.0, 86400.0], not [60.0, 3600.0]"),
        ({"grace": 10.0}, "grace 5.0, not 10.0"),
        ({"max_dimension_values": 4}, "max_dimension_values 3, not 4"),
        ({"window_lg_k": 10}, "window sketch lg_k 12, not 10"),
    ],
)
def test_a_differently_built_aggregator_refuses_the_state(
    kwargs: dict[str, Any], message: str
) -> None:
    a = build()
    a.add(event("pageview", T0, properties={"page": "/"}), T0)
    fresh = build(**kwargs)
    with pytest.raises(IncompatibleState, match=re.escape(message)):
        restore_aggregator(fresh, via_msgpack(export_aggregator(a)))
    assert fresh.metrics() == {}


def test_several_differences_are_all_named() -> None:
    state = export_aggregator(build())
    with pytest.raises(
        IncompatibleState, match=re.escape("grace 5.0, not 1.0; max_dimension_values")
    ):
        restore_aggregator(build(grace=1.0, max_dimension_values=9), state)


def test_unknown_state_format_is_incompatible() -> None:
    state = export_aggregator(build())
    state["format"] = 99
    with pytest.raises(IncompatibleState, match="format 99,"):
        restore_aggregator(build(), state)


def test_restore_needs_a_fresh_aggregator() -> None:
    state = export_aggregator(build())
    used = build()
    used.add(event(), T0)
    with pytest.raises(ValueError, match="freshly built"):
        restore_aggregator(used, state)


def test_malformed_state_raises_value_error() -> None:
    state = export_aggregator(build())
    del state["levels"]
    with pytest.raises(ValueError, match="malformed"):
        restore_aggregator(build(), state)


# -- what an export is ---------------------------------------------------------------------

PLAIN = (dict, list, tuple, str, int, float, bytes, bool, type(None))


def assert_plain(value: Any) -> None:
    assert isinstance(value, PLAIN), type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert_plain(key)
            assert_plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            assert_plain(item)


def busy() -> Aggregator:
    agg = build(SMALL_SIZES)
    agg.add_many(
        [event("pageview", T0 + i, f"u{i}", "s", {"page": f"/{i % 5}"}) for i in range(0, 100, 3)]
        + [event("purchase", T0 + 40, "u1", None, {"amount": 12.5})],
        T0 + 1,
    )
    agg.close_due(T0 + 50)
    agg.add(event("click", T0 + 1, "u1", properties={"element": "buy"}), T0 + 51)  # late
    return agg


def test_exports_are_plain_values_and_share_nothing() -> None:
    agg = busy()
    state = export_aggregator(agg)
    closed = export_closed(agg.close_due(T0 + 60))
    for value in (state, closed):
        assert_plain(value)
    before = via_msgpack(state)
    agg.add_many([event("pageview", T0 + 95, "u1", "s", {"page": "/x"})], T0 + 96)
    assert via_msgpack(state) == before


def test_closed_windows_round_trip_with_their_late_flag() -> None:
    agg = busy()
    closed = agg.close_due(T0 + 400)
    assert {w.late for w in closed} == {True, False}
    for transport in (lambda x: x, via_msgpack):
        back = restore_closed(transport({"w": export_closed(closed)})["w"])
        assert closed_view(back) == closed_view(closed)
        assert all(isinstance(w.metrics, dict) for w in back)
    assert restore_closed(export_closed([])) == []


def test_a_checkpoint_loads_under_changed_rules() -> None:
    """Rules are restart-only: the state of the old rules loads into an aggregator with
    new ones; a removed rule's series stay as plain metrics, a new rule starts empty, a
    metric whose kind changed is left out, and counting goes on."""
    from twisted_rta.aggregation.fields import FieldPath
    from twisted_rta.aggregation.rules import Match, MetricRule, Rules, builtin_rules

    plan = FieldPath.parse("properties.plan")
    signup = Match(type="signup")
    old_rules = Rules(
        (
            *builtin_rules(),
            MetricRule("signups", signup, count=True, labels=(("plan", plan),)),
            MetricRule("plans", signup, count=True),
        )
    )
    new_rules = Rules(
        (
            *builtin_rules(),
            MetricRule("plans", signup, unique=plan),  # was a counter
            MetricRule("accounts", signup, unique=FieldPath.parse("user_id")),
        )
    )

    def aggregator(rules: Rules) -> Aggregator:
        return Aggregator(
            window_sizes=DEFAULT_SIZES,
            grace=5.0,
            max_dimension_values=3,
            started_at=T0,
            rules=rules,
        )

    original = aggregator(old_rules)
    original.add_many(
        [event("signup", T0 + 1, user_id="u1", properties={"plan": "pro"})] * 2, T0 + 2
    )
    twin = aggregator(new_rules)
    restore_aggregator(twin, via_msgpack(export_aggregator(original)))
    kept = twin.metric("signups:pro")
    assert kept is not None and kept.value == 2  # no longer a family: a plain metric
    assert twin.metric("plans") is None  # a counter then, a unique now: left out
    twin.add_many([event("signup", T0 + 3, user_id="u2", properties={"plan": "team"})], T0 + 4)
    plans, accounts = twin.metric("plans"), twin.metric("accounts")
    assert plans is not None and plans.value == 1
    assert accounts is not None and accounts.value == 1  # only events after the restart
    total = twin.metric("total_events")
    assert total is not None and total.value == 3

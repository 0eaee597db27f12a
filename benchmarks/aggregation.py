"""The aggregator's own cost, in process: what a worker does per ingest request, timed.

    .venv/bin/python benchmarks/aggregation.py [--events 300000] [--batch 100] [--runs 7]
        [--warm 100000] [--seed 1] [--cold] [--profile]

Builds the real ``Aggregator`` as the daemon does (``wiring.new_aggregator`` on the default
config: its window resolutions, grace and dimension limit) and realistic request bodies (the
mix of the wrk scenarios: 70% pageview with a page out of 10k and a referrer, 20% click on one
of 200 elements of a page, 10% purchase with a log-normal amount, a currency and a sku; users
out of 1M, sessions out of 200k; no timestamp, so each event is stamped at arrival and all fall
in one minute window) in batches of ``--batch``. It then times exactly the call
``ingest/workers.py`` makes per step: ``aggregator.add_many(events, now)`` (the batch summary
and its application to the all-time set and the window).

Each body is decoded into ``Event`` values by the daemon's decoder just before its batch is
timed (the decoding is not timed), so the aggregator sees fresh objects in the CPU cache, as
it does behind the decoder in the daemon; ``--cold`` decodes every batch up front instead
(hundreds of MB of events: then much of the time is memory latency the daemon does not pay).

Each run starts from a fresh aggregator fed ``--warm`` events first (untimed), so the counter
families are full and the all-time sketches past their sparse modes, as in a daemon that has
been up for a while. Events/s are per CPU second of the timed calls (the thread's CPU time,
so other processes taking the core do not count); the best run is printed (the host's speed
still varies from second to second: compare best runs of the same command). ``--profile``
adds a cProfile of the timed calls of one more run (top 15 by internal time).
``--rule '{name: ..., when: ..., count: true}'`` adds a metric rule (repeatable) and
``--no-builtin`` and ``--no-web`` drop the presets, to price each rule; ``--browser-events``
gives every event what the browser endpoints add (a site, source, client families, visit
keys), so the web preset takes them all. ``--client-requests``
makes each request one client's (one user and one session for all its
events, as a browser SDK sends them) instead of every event drawing its own ids. After the
last run the reads a flush tick and a query make are timed too (all-time totals, a breakdown,
stats, closing the minute window), so that work taken off the ingest path cannot hide there.
Nothing here is part of the test run.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import math
import pstats
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.config import Config, LimitsConfig, config_from_mapping
from twisted_rta.events.decode import decode_batch
from twisted_rta.events.model import Event
from twisted_rta.wiring import new_aggregator

REFERRERS = (
    "",
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://twitter.com/",
    "https://example.org/blog",
)
MINUTE = 60.0
# A minute boundary: every event of a run arrives within the 50 seconds after it.
WINDOW_START = 1_700_000_040.0
LIMITS = LimitsConfig()
GRACE = config_from_mapping({}).windows.grace


def realistic_event(rng: random.Random) -> dict[str, Any]:
    """One event as the wrk scripts send it (``benchmarks/wrk/common.lua``)."""
    page = rng.randrange(10_000)
    r = rng.random()
    event: dict[str, Any] = {
        "user_id": f"u{rng.randrange(1_000_000)}",
        "session_id": f"s{rng.randrange(200_000)}",
    }
    if r < 0.70:
        event["type"] = "pageview"
        event["properties"] = {"page": f"/p/{page}", "referrer": rng.choice(REFERRERS)}
    elif r < 0.90:
        event["type"] = "click"
        event["properties"] = {"element": f"btn-{rng.randrange(200)}", "page": f"/p/{page}"}
    else:
        event["type"] = "purchase"
        event["properties"] = {
            "amount": round(math.exp(rng.gauss(3.0, 0.8)), 2),
            "currency": "EUR",
            "sku": f"sku-{rng.randrange(5000)}",
        }
    return event


SITES = ("example.com", "shop.example.com", "blog.example.org")
SOURCES = ("Direct / None", "Google", "Twitter", "news.example.net", "DuckDuckGo")
CLIENTS = (
    ("Chrome", "Windows", "Desktop"),
    ("Firefox", "Linux", "Desktop"),
    ("Mobile Safari", "iOS", "Mobile"),
    ("Chrome Mobile", "Android", "Mobile"),
)


def as_browser_event(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as the browser endpoints make it: a site, its enrichment, and its place in
    a visit (a third open one, a tenth carry a campaign)."""
    properties = event["properties"]
    properties["site"] = rng.choice(SITES)
    properties["source"] = rng.choice(SOURCES)
    properties["browser"], properties["os"], properties["device"] = rng.choice(CLIENTS)
    if rng.random() < 0.1:
        properties["utm_campaign"] = f"campaign-{rng.randrange(20)}"
        properties["utm_medium"] = "email"
    if rng.random() < 0.3:
        properties["entry"] = True
    else:
        properties["visit_seconds"] = round(rng.expovariate(1 / 40), 3)
    if event["type"] == "pageview":
        properties["visit_pageview"] = rng.randrange(1, 5)
    return event


def request_bodies(
    rng: random.Random,
    count: int,
    batch: int,
    one_client: bool = False,
    browser: bool = False,
) -> list[bytes]:
    """``count`` events as JSON batch bodies of ``batch`` events; with ``one_client`` all
    events of a body have the user and session of its first; with ``browser`` they are
    browser events (``as_browser_event``)."""
    events = [realistic_event(rng) for _ in range(count)]
    if browser:
        events = [as_browser_event(rng, event) for event in events]
    bodies = []
    for i in range(0, count, batch):
        request = events[i : i + batch]
        if one_client:
            for event in request:
                event["user_id"], event["session_id"] = (
                    request[0]["user_id"],
                    request[0]["session_id"],
                )
        bodies.append(json.dumps(request).encode())
    return bodies


class Requests:
    """The requests of a run, each with its arrival time, decoded on demand."""

    def __init__(self, bodies: Sequence[bytes]) -> None:
        self.bodies = bodies
        # Arrival times spread over 50 seconds of one minute window.
        self.step = 50.0 / max(len(bodies), 1)
        self._ids = itertools.count()

    def decoded(self) -> list[tuple[float, tuple[Event, ...]]]:
        return [self.decode(i) for i in range(len(self.bodies))]

    def decode(self, index: int) -> tuple[float, tuple[Event, ...]]:
        now = WINDOW_START + index * self.step
        # The daemon's decoder, with cheap ids: uuid4s cost microseconds each, untimed here.
        result = decode_batch(
            self.bodies[index], now=now, limits=LIMITS, new_id=lambda: f"{next(self._ids):x}"
        )
        assert not result.errors, result.errors
        return now, result.events


def fresh(warm: Requests, config: Config) -> Aggregator:
    aggregator = new_aggregator(config, WINDOW_START)
    for now, events in warm.decoded():
        aggregator.add_many(events, now)
    return aggregator


def feed(
    aggregator: Aggregator, requests: Requests, cold: bool, profiler: cProfile.Profile | None
) -> float:
    """CPU seconds spent in ``add_many`` (as ``WorkerPool._apply`` calls it) for every
    request."""
    add_many = aggregator.add_many
    # CPU time of this thread: the host's other processes (tests, daemons) take the core
    # away at random, and wall time would count that (~0.8 us per call, 8 ns per event).
    clock = time.thread_time
    spent = 0.0
    if cold:
        decoded = requests.decoded()
        gc.collect()
        began = clock()
        for now, events in decoded:
            add_many(events, now)
        return clock() - began
    for index in range(len(requests.bodies)):
        now, events = requests.decode(index)
        if profiler is not None:
            profiler.enable()
        began = clock()
        add_many(events, now)
        spent += clock() - began
        if profiler is not None:
            profiler.disable()
    return spent


def timed_read(read: Callable[[], object], repeat: int = 5) -> float:
    """Best of ``repeat`` calls of ``read``, in milliseconds."""
    best = math.inf
    for _ in range(repeat):
        began = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - began)
    return best * 1000


def report_reads(aggregator: Aggregator) -> None:
    now = WINDOW_START + 55.0
    reads: list[tuple[str, Callable[[], object]]] = [
        ("stats()", lambda: aggregator.stats(now)),
        ("global_metric_copies() (GET /metrics)", aggregator.global_metric_copies),
        (
            "global_metric_copies(prefix='page_views:')",
            lambda: aggregator.global_metric_copies(prefix="page_views:"),
        ),
        ("global_changes(since) (flush totals)", lambda: aggregator.global_changes(WINDOW_START)),
    ]
    print("reads after the last run (best of 5, ms):")
    for name, read in reads:
        print(f"  {name:<44}{timed_read(read):9.3f}")
    began = time.perf_counter()
    closed = aggregator.close_due(WINDOW_START + MINUTE + GRACE)
    spent = (time.perf_counter() - began) * 1000
    print(f"  {'close_due() of the minute window':<44}{spent:9.3f}  ({len(closed)} window)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="timed events per run")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (the best is printed)")
    parser.add_argument("--warm", type=int, default=100_000, help="untimed events first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="decode every batch up front")
    parser.add_argument("--profile", action="store_true", help="cProfile one more run")
    parser.add_argument(
        "--client-requests", action="store_true", help="one user and session per request"
    )
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="YAML",
        help="a metric rule (a YAML flow mapping) added to the built-in ones; repeatable",
    )
    parser.add_argument("--no-builtin", action="store_true", help="metrics.builtin: false")
    parser.add_argument("--no-web", action="store_true", help="metrics.web: false")
    parser.add_argument(
        "--browser-events",
        action="store_true",
        help="events as the browser endpoints make them (a site, enrichment, visit keys)",
    )
    args = parser.parse_args()
    config = config_from_mapping(
        {
            "metrics": {
                "builtin": not args.no_builtin,
                "web": not args.no_web,
                "rules": [yaml.safe_load(rule) for rule in args.rule],
            }
        }
    )

    rng = random.Random(args.seed)
    warm = Requests(
        request_bodies(rng, args.warm, args.batch, args.client_requests, args.browser_events)
    )
    timed = Requests(
        request_bodies(rng, args.events, args.batch, args.client_requests, args.browser_events)
    )
    mode = "decoded all up front (--cold)" if args.cold else "each decoded just before its call"
    if args.client_requests:
        mode += "; one client per request"
    print(
        f"{args.events:,} events in requests of {args.batch} ({mode}), after {args.warm:,} "
        f"warm-up events; {args.runs} runs; built-in rules "
        f"{'off' if args.no_builtin else 'on'}, web rules {'off' if args.no_web else 'on'}, "
        f"{len(args.rule)} more"
    )
    rates = []
    for run in range(1, args.runs + 1):
        aggregator = fresh(warm, config)
        gc.collect()  # no collection left over from the warm-up or the last run
        seconds = feed(aggregator, timed, args.cold, None)
        rates.append(args.events / seconds)
        per_event = seconds * 1e6 / args.events
        print(f"  run {run}: {rates[-1]:>10,.0f} events/s ({per_event:.2f} us/event)")
    best = max(rates)
    print(f"best: {best:,.0f} events/s ({1e6 / best:.2f} us/event)")
    total = aggregator.metric("total_events")
    assert total is not None and total.count == args.warm + args.events, "events went missing"
    report_reads(aggregator)

    if args.profile:
        aggregator = fresh(warm, config)
        profiler = cProfile.Profile()
        if args.cold:
            profiler.enable()
        feed(aggregator, timed, args.cold, None if args.cold else profiler)
        profiler.disable()
        print("\ncProfile of the timed calls of one more run, top 15 by internal time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()

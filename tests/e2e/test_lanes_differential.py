"""The two HTTP lanes answer alike: two real ``twistd rta`` processes, identical but for
``server.fast_lane`` (true: the httptools fast lane takes the ingest POSTs; false: twisted.web
answers everything, the declared reference), get the same raw-socket corpus
(tests/e2e/lanes_corpus.py) and must send the same bytes back, up to what differs by nature
(Date, generated request and event ids, timestamps, Retry-After's countdown); then their
Prometheus counters of requests and events must agree."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from attrs import frozen
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from tests.e2e import lanes_corpus as corpus
from tests.e2e.process import DaemonProcess, clean_exit
from tests.e2e.test_daemon import start

pytestmark = pytest.mark.e2e
# A case's own socket operations are bounded by corpus.TIMEOUT each; this bounds the whole.
CASE_TIMEOUT = 60.0
# What the lanes must count alike: every request by route and status (and its latency
# observations), every event by endpoint and outcome.
COUNTED = {
    "rta_http_requests_total",
    "rta_http_request_duration_seconds_count",
    "rta_events_received_total",
    "rta_events_accepted_total",
    "rta_events_rejected_total",
}


@frozen
class Lane:
    name: str
    daemon: DaemonProcess
    port: int


async def start_lane(root: Path, fast_lane: bool) -> Lane:
    name = "fast" if fast_lane else "reference"
    directory = root / name
    directory.mkdir()
    config = directory / "rta.yaml"
    config.write_text(yaml.safe_dump(corpus.daemon_config(fast_lane=fast_lane)))
    daemon, base = await start(directory, "-c", str(config))
    started = next(record for record in daemon.records if "config" in record)
    assert started["config"]["server.fast_lane"] is fast_lane, daemon.output_text()
    return Lane(name, daemon, int(base.rsplit(":", 1)[1]))


@pytest_twisted.async_yield_fixture(scope="module")
async def lanes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Lane, Lane]]:
    """(reference, fast): started together, stopped cleanly at the end of the module."""
    root = tmp_path_factory.mktemp("lanes")
    results = await DeferredList(
        [ensureDeferred(start_lane(root, fast)) for fast in (False, True)],
        consumeErrors=True,
    )
    started = [result for ok, result in results if ok]
    try:
        failures = [result for _, result in results if isinstance(result, Failure)]
        if failures:
            failures[0].raiseException()
        reference, fast = started
        yield reference, fast
    finally:
        for lane in started:
            reason = await lane.daemon.terminate()
            assert clean_exit(reason), lane.daemon.output_text()
            tracebacks = [line for line in lane.daemon.other_output if "Traceback" in line]
            assert not tracebacks, lane.daemon.output_text()


async def run(lane: Lane, case: corpus.Case) -> corpus.Outcome:
    outcome: corpus.Outcome = await deferToThread(corpus.exchange, lane.port, case).addTimeout(
        CASE_TIMEOUT, reactor
    )
    return outcome


def difference(case: corpus.Case, reference: corpus.Outcome, fast: corpus.Outcome) -> str:
    """'' when the lanes answered alike, else a unified diff of their normal forms."""
    if corpus.normal_outcome(reference) == corpus.normal_outcome(fast):
        return ""
    diff = difflib.unified_diff(
        corpus.render(reference),
        corpus.render(fast),
        "fast_lane: false",
        "fast_lane: true",
        n=3,
        lineterm="",
    )
    return f"--- case {case.name!r}\n" + "\n".join(diff)


def statuses(outcome: corpus.Outcome) -> tuple[int, ...]:
    return tuple(response.status for response in outcome.responses)


def misframed(case: corpus.Case, outcome: corpus.Outcome) -> str:
    """What is wrong with the reference's answer for what the case means to test, or ''."""
    problems = []
    if statuses(outcome) != case.expect:
        problems.append(f"statuses {statuses(outcome)}, expected {case.expect}")
    if case.expect and outcome.cut is not None:
        problems.append(f"reading cut short: {outcome.cut}")
    if case.closes and not outcome.closed:
        problems.append("the connection was not closed")
    if outcome.trailing:
        problems.append(f"bytes after the last answer: {outcome.trailing[:200]!r}")
    if not problems:
        return ""
    return (
        f"--- case {case.name!r}: "
        + "; ".join(problems)
        + "\n"
        + "\n".join(corpus.describe(outcome))
    )


async def scrape(lane: Lane) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The counters both lanes must agree on, from GET /metrics (read-scope key)."""
    case = corpus.Case(
        "scrape /metrics",
        (corpus.request("GET", "/metrics", key=corpus.QUERY_KEY), corpus.Read()),
        (200,),
    )
    outcome = await run(lane, case)
    assert statuses(outcome) == (200,), "\n".join(corpus.describe(outcome))
    counted = {}
    for family in text_string_to_metric_families(outcome.responses[0].body.decode()):
        for sample in family.samples:
            if sample.name in COUNTED:
                counted[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return counted


@pytest_twisted.ensureDeferred
async def test_both_lanes_answer_the_corpus_alike_and_count_it_alike(
    lanes: tuple[Lane, Lane],
) -> None:
    reference, fast = lanes
    cases = corpus.corpus()
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    differences, misframings = [], []
    for case in cases:  # the same order on both: rate-limit buckets see the same history
        expected = await run(reference, case)
        answered = await run(fast, case)
        misframings.append(misframed(case, expected))
        differences.append(difference(case, expected, answered))
    report = "\n".join(filter(None, misframings))
    if report:
        pytest.fail("the reference lane does not answer the corpus as it expects:\n" + report)
    report = "\n".join(filter(None, differences))
    if report:
        pytest.fail(
            f"{sum(map(bool, differences))} of {len(cases)} cases answered differently "
            f"(- reference, + fast lane):\n{report}"
        )

    counted = [await scrape(lane) for lane in (reference, fast)]
    requests = {
        (dict(labels)["route"], dict(labels)["status"]): value
        for (name, labels), value in counted[0].items()
        if name == "rta_http_requests_total"
    }
    # The corpus reached the counted paths on the reference (the comparison is not vacuous).
    for status in ("202", "400", "401", "403", "405", "413", "415", "429"):
        assert requests.get(("/api/v1/events", status), 0) > 0, (status, requests)
    for status in ("202", "400", "403", "413", "415", "429"):
        assert requests.get(("/api/v1/events/batch", status), 0) > 0, (status, requests)
    accepted = counted[0][("rta_events_accepted_total", (("endpoint", "batch"),))]
    assert accepted > corpus.EVENTS_BURST
    if counted[0] != counted[1]:
        keys = sorted(set(counted[0]) | set(counted[1]))
        rows = [
            f"{name}{dict(labels)}: reference {counted[0].get((name, labels))}, "
            f"fast lane {counted[1].get((name, labels))}"
            for name, labels in keys
            if counted[0].get((name, labels)) != counted[1].get((name, labels))
        ]
        pytest.fail("the lanes count differently:\n" + "\n".join(rows))


@pytest_twisted.ensureDeferred
async def test_an_early_413_to_expect_100_continue_is_the_last_thing_sent(
    lanes: tuple[Lane, Lane],
) -> None:
    case = corpus.EXPECT_OVER_LIMIT
    reference, fast = lanes
    expected = await run(reference, case)
    answered = await run(fast, case)
    report = "\n".join(
        filter(
            None,
            [
                misframed(case, expected),
                misframed(case, answered),
                difference(case, expected, answered),
            ],
        )
    )
    if report:
        pytest.fail(report)

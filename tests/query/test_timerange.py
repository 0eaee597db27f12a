"""Query time ranges: the forms ``from`` and ``to`` take, and their bounds."""

from __future__ import annotations

import pytest

from tests.conftest import Daemon
from tests.helpers import NOW as DAEMON_NOW
from twisted_rta.query.timerange import LATEST, RangeError, parse_instant, parse_range

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        (" now ", NOW),
        ("-15m", NOW - 900),
        ("-1500ms", NOW - 1.5),
        ("2025-11-24T15:00:00Z", NOW - 3600),
        ("2025-11-24T17:00:00+01:00", NOW),
        ("1764000000000", NOW),
        ("1764000000250", NOW + 0.25),
        (" 1763996400000\n", NOW - 3600),
        ("0", 0.0),
        ("000001764000000000", NOW),
        ("253402300799000", LATEST),
    ],
)
def test_instants(text: str, expected: float) -> None:
    assert parse_instant(text, NOW, "from") == expected


@pytest.mark.parametrize(
    "text",
    ["253402300799001", "9" * 16, "9" * 5000, "-1764000000000", "+1764000000000", "1e12"],
)
def test_epoch_milliseconds_outside_1970_to_9999_or_signed_are_refused(text: str) -> None:
    with pytest.raises(RangeError) as caught:
        parse_instant(text, NOW, "to")
    assert caught.value.parameter == "to"


def test_malformed_instants_name_every_accepted_form() -> None:
    with pytest.raises(RangeError) as caught:
        parse_instant("yesterday", NOW, "from")
    assert caught.value.message == (
        "from must be 'now', a relative time like -1h or -7d, an RFC 3339 time with an offset, "
        "or epoch milliseconds; got 'yesterday'"
    )


def test_far_epoch_milliseconds_are_refused_with_the_bounds() -> None:
    with pytest.raises(RangeError) as caught:
        parse_instant("9" * 16, NOW, "from")
    assert caught.value.message == f"from must lie between 1970 and 9999; got {'9' * 16!r}"


def test_ranges_take_epoch_milliseconds() -> None:
    start, end = parse_range("1763996400000", "1764000000000", now=NOW, default_from=None)
    assert (start, end) == (NOW - 3600, NOW)
    assert parse_range("1763996400000", None, now=NOW, default_from=None) == (NOW - 3600, NOW)
    with pytest.raises(RangeError) as caught:
        parse_range("1764000000000", "1763996400000", now=NOW, default_from=None)
    assert caught.value.parameter == "to"


def test_the_query_routes_take_epoch_milliseconds(daemon: Daemon) -> None:
    daemon.http.post("/api/v1/events", {"type": "pageview", "properties": {"page": "/a"}})
    daemon.reactor.advance(1)
    start, end = int((DAEMON_NOW - 300) * 1000), int((DAEMON_NOW + 60) * 1000)
    reply = daemon.http.get(f"/api/v1/metrics/pageviews?from={start}&to={end}")
    assert reply.status == 200
    assert reply.json["data"]["value"] == 1
    series = daemon.http.get(f"/api/v1/metrics/pageviews/series?from={start}")
    assert series.status == 200
    bad = daemon.http.get("/api/v1/metrics/pageviews?from=99999999999999999")
    assert (bad.status, bad.json["code"], bad.json["parameter"]) == (
        400,
        "invalid_parameter",
        "from",
    )

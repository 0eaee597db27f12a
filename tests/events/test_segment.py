"""events/segment.py: Segment's bodies -> Events (mapping, clock skew, errors), pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest

from twisted_rta.config import config_from_mapping
from twisted_rta.events.model import BatchResult, BodyError, Event, EventError
from twisted_rta.events.segment import BATCH, frame_segment, segment_events

NOW = 1_795_748_400.0
LIMITS = config_from_mapping({}).limits


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def decode(call: str, body: Any, limits: Any = LIMITS) -> BatchResult:
    ids = count()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    framed = frame_segment(raw, call, limits)
    return segment_events(framed, received=NOW, limits=limits, new_id=lambda: f"id{next(ids)}")


def one(call: str, body: Any) -> Event:
    result = decode(call, body)
    assert result.errors == (), result.errors
    [event] = result.events
    return event


def error(call: str, body: Any) -> EventError:
    [problem] = decode(call, body).errors
    return problem


def test_track_becomes_an_event_of_its_name_with_id_user_and_properties() -> None:
    event = one(
        "track",
        {"event": " Signed Up ", "userId": "u1", "messageId": "m1", "properties": {"plan": "pro"}},
    )
    assert (event.id, event.type, event.user_id, event.timestamp) == ("m1", "Signed Up", "u1", NOW)
    assert event.properties == {"plan": "pro"}


def test_anonymous_id_is_the_user_without_user_id_and_numbers_are_digits() -> None:
    assert one("track", {"event": "e", "anonymousId": "a1"}).user_id == "a1"
    assert one("track", {"event": "e", "userId": 42, "anonymousId": "a1"}).user_id == "42"
    assert one("track", {"event": "e", "userId": "", "anonymousId": "a1"}).user_id == "a1"


def test_page_is_a_pageview_with_the_path_name_referrer_and_campaign() -> None:
    event = one(
        "page",
        {
            "userId": "u",
            "name": "Pricing",
            "properties": {"url": "https://example.com/pricing?x=1", "title": "P"},
            "context": {
                "page": {"referrer": "https://google.com/"},
                "campaign": {"name": "spring", "source": "news", "medium": "email", "x": "y"},
            },
        },
    )
    assert event.type == "pageview"
    assert event.properties == {
        "url": "https://example.com/pricing?x=1",
        "title": "P",
        "page": "/pricing",
        "referrer": "https://google.com/",
        "utm_campaign": "spring",
        "utm_source": "news",
        "utm_medium": "email",
        "name": "Pricing",
    }


def test_page_prefers_properties_path_then_context() -> None:
    assert (
        one(
            "page", {"userId": "u", "properties": {"path": "/a", "url": "https://e.com/b"}}
        ).properties["page"]
        == "/a"
    )
    context = {"page": {"url": "https://e.com/c"}}
    assert one("page", {"userId": "u", "context": context}).properties["page"] == "/c"
    # Another call takes the page only from its context.
    assert one("track", {"event": "e", "userId": "u", "properties": {"path": "/x"}}).properties == {
        "path": "/x"
    }


def test_screen_identify_group_alias_and_what_is_not_stored() -> None:
    assert one("screen", {"userId": "u", "name": "Home"}).properties == {"name": "Home"}
    identify = one("identify", {"userId": "u", "traits": {"email": "x@example.com"}})
    assert (identify.type, identify.properties) == ("identify", {})
    group = one("group", {"userId": "u", "groupId": 7, "traits": {"name": "Acme"}})
    assert (group.type, group.properties) == ("group", {"group_id": "7"})
    alias = one("alias", {"userId": "u", "previousId": "a1"})
    assert (alias.type, alias.properties) == ("alias", {"previous_id": "a1"})


def test_the_timestamp_is_corrected_by_the_client_clock_offset() -> None:
    fast = NOW + 3600  # the client's clock is an hour fast
    body = {"event": "e", "userId": "u", "timestamp": iso(fast - 10), "sentAt": iso(fast)}
    assert one("track", body).timestamp == pytest.approx(NOW - 10)
    # originalTimestamp when there is no timestamp; without sentAt it stands.
    body = {"event": "e", "userId": "u", "originalTimestamp": iso(NOW - 60)}
    assert one("track", body).timestamp == pytest.approx(NOW - 60)
    # No timestamp: the arrival.
    assert one("track", {"event": "e", "userId": "u", "sentAt": iso(NOW + 5)}).timestamp == NOW


def test_a_batch_sent_at_applies_to_messages_without_their_own() -> None:
    slow = NOW - 7200
    result = decode(
        "batch",
        {
            "batch": [
                {"type": "track", "event": "a", "userId": "u", "timestamp": iso(slow)},
                {
                    "type": "track",
                    "event": "b",
                    "userId": "u",
                    "timestamp": iso(NOW),
                    "sentAt": iso(NOW),
                },
            ],
            "sentAt": iso(slow),
        },
    )
    assert [event.timestamp for event in result.events] == [pytest.approx(NOW)] * 2


def test_out_of_range_times_get_our_errors() -> None:
    future = error("track", {"event": "e", "userId": "u", "timestamp": iso(NOW + 3600)})
    assert (future.field, future.code) == ("timestamp", "timestamp_in_future")
    old = error("track", {"event": "e", "userId": "u", "originalTimestamp": iso(NOW - 400 * 86400)})
    assert (old.field, old.code) == ("originalTimestamp", "timestamp_too_old")
    bad = error(
        "track", {"event": "e", "userId": "u", "timestamp": iso(NOW), "sentAt": "yesterday"}
    )
    assert (bad.field, bad.code) == ("sentAt", "invalid_timestamp")


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"userId": "u"}, "event", "missing_field"),
        ({"event": " ", "userId": "u"}, "event", "empty_field"),
        ({"event": 5, "userId": "u"}, "event", "invalid_type"),
        ({"event": "x" * 129, "userId": "u"}, "event", "too_long"),
        ({"event": "e"}, "userId", "missing_field"),
        ({"event": "e", "userId": "u" * 257}, "userId", "too_long"),
        ({"event": "e", "anonymousId": True}, "anonymousId", "invalid_type"),
        ({"event": "e", "userId": "u", "messageId": 3}, "messageId", "invalid_type"),
        ({"event": "e", "userId": "u", "properties": []}, "properties", "invalid_type"),
        ({"event": "e", "userId": "u", "context": "x"}, "context", "invalid_type"),
        (
            {"event": "purchase", "userId": "u", "properties": {"amount": -1}},
            "properties.amount",
            "invalid_amount",
        ),
        (
            {"event": "e", "userId": "u", "properties": {"k": "x" * 5000}},
            "properties.k",
            "too_long",
        ),
    ],
)
def test_message_errors_name_the_field_as_sent(body: dict[str, Any], field: str, code: str) -> None:
    problem = error("track", body)
    assert (problem.field, problem.code) == (field, code)


def test_properties_follow_our_property_limits() -> None:
    limits = config_from_mapping({"limits": {"max_properties": 2}}).limits
    [problem] = decode("page", {"userId": "u", "properties": {"path": "/a", "b": 1}}, limits).errors
    assert problem.code == "too_many_properties"  # path, b and the page we add


def test_batch_messages_name_their_call_and_are_judged_one_by_one() -> None:
    result = decode(
        "batch",
        {
            "batch": [
                {"type": "screen", "userId": "u", "name": "S"},
                {"type": "nope"},
                3,
                {"userId": "u"},
            ]
        },
    )
    assert [event.type for event in result.events] == ["screen"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (1, "type", "invalid_field"),
        (2, "", "invalid_type"),
        (3, "type", "missing_field"),
    ]


@pytest.mark.parametrize(
    ("call", "body", "status", "code"),
    [
        ("track", b"", 400, "empty_body"),
        ("track", b"[1]", 400, "invalid_body"),
        ("track", b'{"a":1} x', 400, "trailing_data"),
        ("track", {"event": "e", "userId": "u", "writeKey": 5}, 400, "invalid_type"),
        ("track", {"event": "e", "userId": "u", "p": "x" * 33_000}, 413, "event_too_large"),
        ("batch", {"sentAt": iso(NOW)}, 400, "empty_batch"),
        ("batch", {"batch": []}, 400, "empty_batch"),
        ("batch", {"batch": {}}, 400, "invalid_body"),
        ("batch", {"batch": [{}] * 1001}, 413, "batch_too_large"),
        ("batch", {"batch": [{"p": "x" * 30_000}] * 18}, 413, "body_too_large"),
    ],
)
def test_body_errors(call: str, body: Any, status: int, code: str) -> None:
    with pytest.raises(BodyError) as raised:
        decode(call, body)
    assert (raised.value.status, raised.value.code) == (status, code)


def test_a_batch_message_over_32_kb_is_refused_alone() -> None:
    big = {"type": "track", "event": "big", "userId": "u", "properties": {"s": "x" * 33_000}}
    result = decode("batch", {"batch": [big, {"type": "track", "event": "ok", "userId": "u"}]})
    assert [e.type for e in result.events] == ["ok"]
    assert [(e.index, e.code) for e in result.errors] == [(0, "event_too_large")]


def test_the_write_key_is_handed_back() -> None:
    framed = frame_segment(json.dumps({"batch": [{}], "writeKey": "k"}).encode(), "batch", LIMITS)
    assert framed.write_key == "k"
    assert frame_segment(b'{"writeKey": ""}', "track", LIMITS).write_key is None


def test_a_large_batch_with_a_lone_surrogate_escape_rejects_that_message_not_the_request() -> None:
    filler = {"type": "track", "event": "e", "userId": "u", "properties": {"pad": "x" * 40_000}}
    body = json.dumps({"batch": [filler]})[:-2] + ', {"type": "track", "event": "\\ud800", '
    body += '"userId": "u"}]}'
    result = decode(BATCH, body.encode())
    assert [(e.index, e.code) for e in result.errors] == [
        (0, "event_too_large"),
        (1, "invalid_unicode"),
    ]


def test_a_batch_context_applies_under_each_message_own() -> None:
    campaign = {"campaign": {"source": "news"}, "page": {"path": "/from-batch"}}
    result = decode(
        BATCH,
        {
            "context": campaign,
            "batch": [
                {"type": "page", "userId": "u"},
                {"type": "page", "userId": "u", "context": {"page": {"path": "/own"}}},
            ],
        },
    )
    first, second = result.events
    assert (first.properties["page"], first.properties["utm_source"]) == ("/from-batch", "news")
    assert (second.properties["page"], second.properties["utm_source"]) == ("/own", "news")
    with pytest.raises(BodyError) as refused:
        decode(BATCH, {"context": [1], "batch": [{"type": "page", "userId": "u"}]})
    assert (refused.value.status, refused.value.code) == (400, "invalid_type")


def test_paths_are_percent_decoded_as_the_tracker_reports_them() -> None:
    page = one("page", {"userId": "u", "properties": {"path": "/caf%C3%A9 "}})
    assert page.properties["page"] == "/café"
    url = one("page", {"userId": "u", "properties": {"url": "https://e.com/a%20b?x=1"}})
    assert url.properties["page"] == "/a b"


def test_a_batch_message_whose_type_is_no_string_is_its_error() -> None:
    result = decode(BATCH, {"batch": [{"type": {"a": 1}, "userId": "u"}, {"type": [1]}]})
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (0, "type", "invalid_field"),
        (1, "type", "invalid_field"),
    ]

"""events/posthog.py: PostHog's capture bodies -> Events (mapping, clock skew, errors), pure."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from itertools import count
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest

from twisted_rta.config import config_from_mapping
from twisted_rta.events.model import BatchResult, BodyError, Event, EventError
from twisted_rta.events.posthog import PostHogBody, frame_posthog, posthog_events

NOW = 1_795_748_400.0
LIMITS = config_from_mapping({}).limits


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def frame(body: Any, limits: Any = LIMITS, **options: Any) -> PostHogBody:
    return frame_posthog(raw(body), limits, **options)


def decode(body: Any, limits: Any = LIMITS, **options: Any) -> BatchResult:
    ids = count()
    framed = frame(body, limits, **options)
    return posthog_events(framed, received=NOW, limits=limits, new_id=lambda: f"id{next(ids)}")


def one(body: Any, limits: Any = LIMITS, **options: Any) -> Event:
    result = decode(body, limits, **options)
    assert result.errors == (), result.errors
    [event] = result.events
    return event


def error(body: Any, limits: Any = LIMITS, **options: Any) -> EventError:
    result = decode(body, limits, **options)
    assert result.events == ()
    [problem] = result.errors
    return problem


def body_error(body: Any, limits: Any = LIMITS, **options: Any) -> BodyError:
    with pytest.raises(BodyError) as raised:
        decode(body, limits, **options)
    return raised.value


def capture(**fields: Any) -> dict[str, Any]:
    """An event as the SDKs send it: a name and a distinct_id, plus ``fields``."""
    return {"event": "e", "distinct_id": "u", **fields}


# ---------------------------------------------------------------------------------------------
# Body shapes


def test_one_event_object_becomes_an_event_with_id_user_and_properties() -> None:
    body = {
        "api_key": "phc_k",
        "event": " Signed Up ",
        "distinct_id": "u1",
        "uuid": "0190f0a8-aaaa-7bbb-8ccc-000000000001",
        "properties": {"plan": "pro", "$lib": "posthog-python"},
    }
    framed = frame(body)
    assert (framed.single, framed.api_key, framed.historical, framed.sent_at) == (
        True,
        "phc_k",
        False,
        None,
    )
    event = one(body)
    assert (event.id, event.type, event.user_id, event.timestamp) == (
        "0190f0a8-aaaa-7bbb-8ccc-000000000001",
        "Signed Up",
        "u1",
        NOW,
    )
    assert event.properties == {"plan": "pro", "$lib": "posthog-python"}


def test_a_batch_object_reports_its_key_flag_and_send_time() -> None:
    body = {
        "api_key": "phc_k",
        "historical_migration": True,
        "sent_at": iso(NOW - 1),
        "batch": [capture(event="a"), capture(event="b")],
    }
    framed = frame(body)
    assert (framed.single, framed.api_key, framed.historical) == (False, "phc_k", True)
    assert framed.sent_at == pytest.approx(NOW - 1)
    result = decode(body)
    assert ([e.type for e in result.events], result.total) == (["a", "b"], 2)
    # Only a JSON true is the flag.
    assert frame({"historical_migration": "true", "batch": [capture()]}).historical is False
    assert frame({"batch": [capture()]}).historical is False


def test_a_json_array_is_a_batch_of_its_events() -> None:
    body = [capture(event="a", properties={"token": "phc_js"}), capture(event="b")]
    framed = frame(body)
    assert (framed.single, framed.api_key, framed.historical, framed.sent_at) == (
        False,
        "phc_js",
        False,
        None,
    )
    result = decode(body)
    assert ([e.type for e in result.events], result.total) == (["a", "b"], 2)


def test_a_form_data_field_holds_the_json_as_is() -> None:
    body = urlencode({"data": json.dumps([capture(event="formed")]), "ver": "1.0"}).encode()
    framed = frame(body, form=True)
    assert framed.single is False
    assert [e.type for e in decode(body, form=True).events] == ["formed"]
    single = urlencode({"data": "  " + json.dumps(capture(event="x"))}).encode()
    assert frame(single, form=True).single is True


def test_a_form_data_field_holds_base64_of_the_json() -> None:
    event = capture(event="b64", properties={"s": "~~~"})
    encoded = base64.b64encode(json.dumps(event).encode()).decode()
    assert "+" in encoded and encoded.endswith("=")  # what the next two cases are about
    assert one(urlencode({"data": encoded}).encode(), form=True).properties == {"s": "~~~"}
    # Unpadded, and with "+" sent unencoded (a form turns it into a space): still read.
    unpadded = encoded.rstrip("=")
    assert one(b"data=" + unpadded.encode(), form=True).type == "b64"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"ver=1&compression=base64",
        urlencode({"data": "not base64!"}).encode(),
        urlencode({"data": "YWJj*"}).encode(),
        b"data=%FF%FE",
    ],
)
def test_a_form_without_readable_data_is_an_invalid_body(body: bytes) -> None:
    problem = body_error(body, form=True)
    assert (problem.status, problem.code) == (400, "invalid_body")
    assert "data" in problem.message or "UTF-8" in problem.message


def test_base64_data_that_is_not_json_gets_the_json_errors() -> None:
    encoded = base64.b64encode(b"{nope").decode()
    problem = body_error(urlencode({"data": encoded}).encode(), form=True)
    assert (problem.status, problem.code) == (400, "invalid_json")


def test_without_form_a_form_body_is_not_json() -> None:
    problem = body_error(urlencode({"data": json.dumps(capture())}).encode())
    assert problem.code == "invalid_json"


# ---------------------------------------------------------------------------------------------
# The project key


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (capture(api_key="a", token="t", properties={"token": "p"}), "a"),
        (capture(api_key="", token="t", properties={"token": "p"}), "t"),
        (capture(token="t", properties={"token": "p", "$token": "q"}), "t"),
        (capture(properties={"token": "p", "$token": "q"}), "p"),
        (capture(properties={"token": "", "$token": "q"}), "q"),
        (capture(properties={"token": 5}), None),
        (capture(), None),
        ({"api_key": "a", "batch": [capture(properties={"token": "p"})]}, "a"),
        ({"batch": [capture(properties={"token": "p"})]}, "p"),
        ({"batch": [3, capture(properties={"token": "p"})]}, None),
        ([capture(properties={"$token": "q"}), capture(properties={"token": "other"})], "q"),
        ([capture(api_key="a", properties={"token": "p"})], "a"),
    ],
)
def test_the_project_key_is_looked_up_as_posthog_does(body: Any, key: str | None) -> None:
    assert frame(body).api_key == key


def test_a_project_key_that_is_not_a_string_is_a_body_error() -> None:
    for body in (capture(api_key=5), {"token": ["t"], "batch": [capture()]}):
        problem = body_error(body)
        assert (problem.status, problem.code) == (400, "invalid_type")


# ---------------------------------------------------------------------------------------------
# Types and derived properties


def test_a_pageview_takes_the_path_of_its_current_url_and_the_referrer() -> None:
    event = one(
        capture(
            event="$pageview",
            properties={
                "$current_url": "https://example.com/pricing?x=1#top",
                "$pathname": "/ignored",
                "$referrer": "https://google.com/",
                "page": "mine",
                "utm_source": "news",
                "utm_medium": "email",
                "utm_campaign": "spring",
                "utm_term": "t",
                "utm_content": "c",
            },
        )
    )
    assert event.type == "pageview"
    assert event.properties == {
        "$current_url": "https://example.com/pricing?x=1#top",
        "$pathname": "/ignored",
        "$referrer": "https://google.com/",
        "page": "/pricing",  # derived: wins over the property
        "utm_source": "news",
        "utm_medium": "email",
        "utm_campaign": "spring",
        "utm_term": "t",
        "utm_content": "c",
        "referrer": "https://google.com/",
    }


def test_a_pageview_falls_back_to_pathname_and_a_bare_host_is_the_root() -> None:
    props = {"$current_url": 5, "$pathname": "/docs"}
    assert one(capture(event="$pageview", properties=props)).properties["page"] == "/docs"
    props = {"$current_url": "https://example.com"}
    assert one(capture(event="$pageview", properties=props)).properties["page"] == "/"
    assert "page" not in one(capture(event="$pageview")).properties


def test_only_a_pageview_gets_a_page() -> None:
    props = {"$current_url": "https://example.com/a"}
    assert one(capture(event="clicked", properties=props)).properties == props


def test_a_direct_referrer_is_no_referrer() -> None:
    props = {"$referrer": "$direct", "$referring_domain": "$direct"}
    event = one(capture(event="$pageview", properties=props))
    assert event.properties == props  # the $ properties kept, no referrer derived
    # Any event gets the referrer.
    assert one(capture(properties={"$referrer": "https://a.io/"})).properties["referrer"] == (
        "https://a.io/"
    )


def test_a_screen_is_a_screen_named_by_its_screen_name() -> None:
    event = one(capture(event="$screen", properties={"$screen_name": "Home"}))
    assert (event.type, event.properties) == ("screen", {"$screen_name": "Home", "name": "Home"})


@pytest.mark.parametrize("name", ["$autocapture", "$identify", "$pageleave", "$groupidentify"])
def test_other_posthog_events_keep_their_names(name: str) -> None:
    assert one(capture(event=name)).type == name


def test_a_derived_value_over_the_string_limit_is_not_derived() -> None:
    limits = attrs.evolve(LIMITS, max_string_length=20)
    long_url = "https://example.com/" + "a" * 30
    event = one(
        capture(event="$pageview", properties={"$current_url": long_url, "$referrer": long_url}),
        limits,
    )
    assert event.properties == {}  # neither the $ properties nor what they would give


# ---------------------------------------------------------------------------------------------
# Ids, users and sessions


def test_uuid_is_the_id_and_an_event_without_one_gets_a_new_id() -> None:
    result = decode([capture(uuid="given"), capture(), capture(uuid="")])
    assert [e.id for e in result.events] == ["given", "id0", "id1"]


def test_distinct_id_is_taken_from_the_event_else_its_properties() -> None:
    assert one(capture(distinct_id="top", properties={"distinct_id": "p"})).user_id == "top"
    assert one({"event": "e", "properties": {"distinct_id": "p"}}).user_id == "p"
    assert one(capture(distinct_id="", properties={"distinct_id": "p"})).user_id == "p"
    assert one(capture(distinct_id=42)).user_id == "42"
    assert one({"event": "e", "properties": {"distinct_id": 7}}).user_id == "7"


def test_session_id_is_mapped_and_mapped_or_person_properties_are_not_stored() -> None:
    event = one(
        capture(
            token="t",
            **{"$set": {"email": "x@example.com"}, "$set_once": {"first": 1}},
            properties={
                "distinct_id": "u",
                "token": "t",
                "$token": "t",
                "$session_id": "s1",
                "$set": {"email": "x@example.com"},
                "$set_once": {"first": 1},
                "$unset": ["old"],
                "kept": 1,
            },
        )
    )
    assert (event.session_id, event.properties) == ("s1", {"kept": 1})
    assert one(capture()).session_id is None


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"event": "e"}, "distinct_id", "missing_field"),
        ({"event": "e", "distinct_id": None, "properties": None}, "distinct_id", "missing_field"),
        ({"event": "e", "distinct_id": ""}, "distinct_id", "missing_field"),
        (capture(distinct_id=True), "distinct_id", "invalid_type"),
        (capture(distinct_id=1.5), "distinct_id", "invalid_type"),
        (capture(distinct_id={"id": 1}), "distinct_id", "invalid_type"),
        (capture(distinct_id="u" * 257), "distinct_id", "too_long"),
        (
            {"event": "e", "properties": {"distinct_id": ["u"]}},
            "properties.distinct_id",
            "invalid_type",
        ),
        (capture(uuid=3), "uuid", "invalid_type"),
        (capture(uuid="x" * 129), "uuid", "too_long"),
        (capture(properties={"$session_id": "s" * 257}), "properties.$session_id", "too_long"),
        (capture(properties={"$session_id": 5}), "properties.$session_id", "invalid_type"),
        ({"distinct_id": "u"}, "event", "missing_field"),
        (capture(event=" "), "event", "empty_field"),
        (capture(event=5), "event", "invalid_type"),
        (capture(event="x" * 129), "event", "too_long"),
        (capture(properties=[]), "properties", "invalid_type"),
        (capture(properties={"k": "x" * 5000}), "properties.k", "too_long"),
        (capture(properties={"k" * 129: 1}), "properties." + "k" * 40 + "...", "too_long"),
        (
            capture(event="purchase", properties={"amount": -1}),
            "properties.amount",
            "invalid_amount",
        ),
    ],
)
def test_event_errors_name_the_field_as_sent(body: dict[str, Any], field: str, code: str) -> None:
    problem = error(body)
    assert (problem.index, problem.field, problem.code) == (0, field, code)


def test_batch_events_are_judged_one_by_one() -> None:
    result = decode(
        {"batch": [capture(event="ok"), 3, {"event": "e"}, capture(event="$screen"), None]}
    )
    assert [e.type for e in result.events] == ["ok", "screen"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (1, "", "invalid_type"),
        (2, "distinct_id", "missing_field"),
        (4, "", "invalid_type"),
    ]
    assert result.total == 5


# ---------------------------------------------------------------------------------------------
# $ properties and the limits


def test_dollar_properties_breaking_a_limit_are_dropped_not_rejected() -> None:
    limits = attrs.evolve(
        LIMITS, max_property_key_length=10, max_string_length=8, max_property_depth=2
    )
    event = one(
        capture(
            properties={
                "$lib": "web",
                "$a_very_long_key": 1,
                "$long": "x" * 9,
                "$deep": {"a": {"b": {"c": 1}}},
                "$nested_ok": {"a": {"b": 1}},
                "$nested": {"a": ["x" * 9]},
                "mine": "ok",
            }
        ),
        limits,
    )
    assert event.properties == {"$lib": "web", "$nested_ok": {"a": {"b": 1}}, "mine": "ok"}


@pytest.mark.parametrize(
    ("properties", "field", "code"),
    [
        ({"a_very_long_key": 1}, "properties.a_very_long_key", "too_long"),
        ({"long": "x" * 9}, "properties.long", "too_long"),
        ({"deep": {"a": {"b": {"c": 1}}}}, "properties.deep.a.b", "too_deep"),
    ],
)
def test_a_user_property_breaking_a_limit_rejects_the_event(
    properties: dict[str, Any], field: str, code: str
) -> None:
    limits = attrs.evolve(
        LIMITS, max_property_key_length=10, max_string_length=8, max_property_depth=2
    )
    problem = error(capture(properties={"$lib": "web", **properties}), limits)
    assert (problem.field, problem.code) == (field, code)


def test_dollar_properties_fill_the_room_left_in_sent_order() -> None:
    props = {"$os": "mac", "a": 1, "$browser": "x", "$lib": "web", "b": 2, "$device": "d"}
    body = capture(
        event="$pageview",
        properties={**props, "$current_url": "https://e.com/p"},
    )
    limits = attrs.evolve(LIMITS, max_properties=5)
    # a, b and the derived page take three; $os and $browser fill the last two.
    event = one(body, limits)
    assert event.properties == {"$os": "mac", "a": 1, "$browser": "x", "b": 2, "page": "/p"}
    limits = attrs.evolve(LIMITS, max_properties=3)
    assert one(body, limits).properties == {"a": 1, "b": 2, "page": "/p"}


def test_a_dropped_dollar_property_takes_no_room() -> None:
    limits = attrs.evolve(LIMITS, max_properties=2, max_string_length=8)
    props = {"$long": "x" * 9, "$lib": "web", "$os": "mac", "a": 1}
    assert one(capture(properties=props), limits).properties == {"$lib": "web", "a": 1}


def test_user_and_derived_properties_over_the_count_reject_the_event() -> None:
    limits = attrs.evolve(LIMITS, max_properties=2)
    body = capture(
        event="$pageview",
        properties={"a": 1, "b": 2, "$lib": "web", "$current_url": "https://e.com/p"},
    )
    problem = error(body, limits)
    assert (problem.field, problem.code) == ("properties", "too_many_properties")
    # A property named like a derived one counts once.
    body["properties"] = {"a": 1, "page": "mine", "$current_url": "https://e.com/p"}
    assert one(body, limits).properties == {"a": 1, "page": "/p"}


# ---------------------------------------------------------------------------------------------
# Time


def test_a_timestamp_without_a_send_time_stands() -> None:
    assert one(capture(timestamp=iso(NOW - 60))).timestamp == pytest.approx(NOW - 60)
    assert one(capture()).timestamp == NOW


def test_a_client_an_hour_fast_lands_at_the_right_time() -> None:
    fast = NOW + 3600
    # posthog-python: sent_at on the batch.
    body = {"batch": [capture(timestamp=iso(fast - 10))], "sent_at": iso(fast)}
    assert one(body).timestamp == pytest.approx(NOW - 10)
    # One event object with its sent_at.
    assert one(capture(timestamp=iso(fast - 10), sent_at=iso(fast))).timestamp == pytest.approx(
        NOW - 10
    )
    # posthog-js: the "_" query parameter, in milliseconds.
    sent_at_ms = str(int(fast * 1000))
    assert frame([capture()], sent_at_ms=sent_at_ms).sent_at == pytest.approx(fast)
    event = one([capture(timestamp=iso(fast - 10))], sent_at_ms=sent_at_ms)
    assert event.timestamp == pytest.approx(NOW - 10)


def test_the_event_sent_at_wins_over_the_body_and_the_body_over_the_query() -> None:
    slow = NOW - 7200
    body = {
        "batch": [
            capture(event="a", timestamp=iso(slow)),
            capture(event="b", timestamp=iso(NOW - 5), sent_at=iso(NOW)),
        ],
        "sent_at": iso(slow),
    }
    result = decode(body, sent_at_ms=str(int(NOW * 1000)))
    assert [e.timestamp for e in result.events] == [pytest.approx(NOW), pytest.approx(NOW - 5)]


def test_ignore_sent_at_keeps_the_timestamp_as_sent() -> None:
    body = {
        "batch": [
            capture(timestamp=iso(NOW - 100), properties={"$ignore_sent_at": True}),
            capture(timestamp=iso(NOW - 100), properties={"$ignore_sent_at": "yes"}),
        ],
        "sent_at": iso(NOW - 50),
    }
    result = decode(body)
    assert [e.timestamp for e in result.events] == [
        pytest.approx(NOW - 100),
        pytest.approx(NOW - 50),
    ]


def test_an_offset_counts_back_from_the_arrival() -> None:
    assert one(capture(offset=5000)).timestamp == pytest.approx(NOW - 5)
    # With a send time too: sent_at - offset, corrected by the clock offset, is the same.
    event = one([capture(offset=2500)], sent_at_ms=str(int((NOW + 3600) * 1000)))
    assert event.timestamp == pytest.approx(NOW - 2.5)
    # A timestamp wins over an offset.
    assert one(capture(timestamp=iso(NOW - 60), offset=5000)).timestamp == pytest.approx(NOW - 60)


def test_a_sent_at_ms_that_is_not_digits_is_ignored() -> None:
    for junk in ("abc", "", "-5", "1.5", "9" * 40, "١٢٣"):
        assert frame([capture()], sent_at_ms=junk).sent_at is None
    assert one([capture(timestamp=iso(NOW - 60))], sent_at_ms="x").timestamp == pytest.approx(
        NOW - 60
    )


def test_an_unparsable_body_sent_at_is_a_body_error() -> None:
    for body in ({"batch": [capture()], "sent_at": "yesterday"}, capture(sent_at=12345)):
        problem = body_error(body)
        assert (problem.status, problem.code) == (400, "invalid_timestamp")
        assert "sent_at" in problem.message


@pytest.mark.parametrize(
    ("event", "field", "code"),
    [
        (capture(timestamp=NOW * 1000), "timestamp", "invalid_timestamp"),
        (capture(timestamp="2026-01-02T03:04:05"), "timestamp", "invalid_timestamp"),
        (capture(timestamp=iso(NOW + 3600)), "timestamp", "timestamp_in_future"),
        (capture(timestamp=iso(NOW - 400 * 86400)), "timestamp", "timestamp_too_old"),
        (capture(timestamp=iso(NOW), sent_at="later"), "sent_at", "invalid_timestamp"),
        # A client an hour slow: its "now" is an hour ahead of ours once corrected.
        (capture(timestamp=iso(NOW), sent_at=iso(NOW - 3600)), "timestamp", "timestamp_in_future"),
        (capture(offset="5000"), "offset", "invalid_type"),
        (capture(offset=-3_600_000), "offset", "timestamp_in_future"),
        (capture(offset=10**400), "offset", "timestamp_too_old"),
    ],
)
def test_time_errors(event: dict[str, Any], field: str, code: str) -> None:
    problem = error({"batch": [event]})
    assert (problem.index, problem.field, problem.code) == (0, field, code)


def test_the_age_limit_is_the_one_passed_for_historical_imports() -> None:
    body = {"historical_migration": True, "batch": [capture(timestamp=iso(NOW - 400 * 86400))]}
    assert frame(body).historical is True
    assert error(body).code == "timestamp_too_old"
    wide = attrs.evolve(LIMITS, max_event_age=1000 * 86400.0)
    assert one(body, wide).timestamp == pytest.approx(NOW - 400 * 86400)


# ---------------------------------------------------------------------------------------------
# Body errors and sizes


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_body"),
        (b"  ", 400, "empty_body"),
        (b"{", 400, "invalid_json"),
        (b"[1,", 400, "invalid_json"),
        (b'{"event": NaN}', 400, "invalid_json"),
        (b'"x"', 400, "invalid_body"),
        (b"null", 400, "invalid_body"),
        (b'{"a":1} x', 400, "trailing_data"),
        (b"[]", 400, "empty_batch"),
        ({"batch": []}, 400, "empty_batch"),
        ({"batch": None}, 400, "empty_batch"),
        ({"batch": {}}, 400, "invalid_body"),
        ({"batch": "x"}, 400, "invalid_body"),
        ({"batch": [{}] * 1001}, 413, "batch_too_large"),
        ([{}] * 1001, 413, "batch_too_large"),
        (capture(properties={"p": "x" * 70_000}), 413, "event_too_large"),
        ({"batch": [capture(properties={"p": "x" * 60_000})] * 18}, 413, "body_too_large"),
        ([capture(properties={"p": "x" * 60_000})] * 18, 413, "body_too_large"),
    ],
)
def test_body_errors(body: Any, status: int, code: str) -> None:
    problem = body_error(body)
    assert (problem.status, problem.code) == (status, code)


def test_a_form_body_over_the_body_limit_is_too_large() -> None:
    limits = attrs.evolve(LIMITS, max_body_bytes=100)
    body = urlencode({"data": json.dumps([capture(properties={"p": "x" * 80})])}).encode()
    assert len(body) > 100
    problem = body_error(body, limits, form=True)
    assert (problem.status, problem.code) == (413, "body_too_large")


def test_a_single_event_is_bounded_by_the_event_limit() -> None:
    limits = attrs.evolve(LIMITS, max_event_bytes=200)
    small = capture(properties={"p": "x" * 100})
    assert one(small, limits).properties == {"p": "x" * 100}
    problem = body_error(capture(properties={"p": "x" * 200}), limits)
    assert (problem.status, problem.code) == (413, "event_too_large")


@pytest.mark.parametrize("shape", ["object", "array"])
def test_a_batch_event_over_the_event_limit_is_refused_alone(shape: str) -> None:
    big = capture(event="big", properties={"s": "x" * 70_000})
    events = [big, capture(event="ok")]
    body: Any = {"batch": events} if shape == "object" else events
    framed = frame(body)
    assert list(framed.oversized) == [0]
    assert framed.oversized[0] > LIMITS.max_event_bytes
    result = decode(body)
    assert [e.type for e in result.events] == ["ok"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [(0, "", "event_too_large")]


def test_a_batch_within_the_event_limit_is_not_sized() -> None:
    assert frame({"batch": [capture(), capture()]}).oversized == {}
    assert frame([capture(), capture()]).oversized == {}


# ---------------------------------------------------------------------------------------------
# Unicode


def test_a_lone_surrogate_escape_rejects_its_event() -> None:
    lone = b'{"event": "e", "distinct_id": "u", "properties": {"k": "\\ud800"}}'
    assert frame(lone).unicode_suspect is True
    problem = error(lone)
    assert (problem.field, problem.code) == ("properties.k", "invalid_unicode")
    # A pair is fine.
    paired = b'{"event": "e", "distinct_id": "u", "properties": {"k": "\\ud83d\\ude00"}}'
    assert one(paired).properties == {"k": "\U0001f600"}
    assert frame(raw(capture())).unicode_suspect is False


@pytest.mark.parametrize("shape", ["object", "array"])
def test_a_lone_surrogate_in_a_sized_batch_rejects_only_its_event(shape: str) -> None:
    bad = '{"event": "bad", "distinct_id": "u", "properties": {"k": "\\udc00"}}'
    padded = json.dumps(capture(event="ok", properties={"p": "x" * 70_000}))
    padded_small = json.dumps(capture(event="fine"))
    events = f"[{bad}, {padded}, {padded_small}]"
    text = events if shape == "array" else f'{{"batch": {events}}}'
    result = decode(text.encode())
    assert [e.type for e in result.events] == ["fine"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (0, "properties.k", "invalid_unicode"),
        (1, "", "event_too_large"),
    ]

"""JSON -> Event decoding and validation: body framing, batch indexes, every field rule."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from twisted_rta.config import LimitsConfig
from twisted_rta.events.decode import decode_batch, decode_event
from twisted_rta.events.ids import id_sequence, new_uuid4
from twisted_rta.events.model import BatchResult, BodyError, Event, EventError, RejectedEvent

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z


# The daemon's own limits type: its defaults are the documented ones.
Limits = LimitsConfig


LIMITS = Limits()


def counter_ids() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"gen-{next(numbers)}"


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def one(event: dict[str, Any], limits: Limits = LIMITS, **kwargs: Any) -> Event:
    return decode_event(encode(event), now=NOW, limits=limits, new_id=counter_ids(), **kwargs)


def rejected(event: dict[str, Any], limits: Limits = LIMITS) -> EventError:
    with pytest.raises(RejectedEvent) as caught:
        one(event, limits)
    assert str(caught.value) == caught.value.error.message
    assert caught.value.error.index is None
    return caught.value.error


def body_error(decode: Callable[..., Any], body: bytes, limits: Limits = LIMITS) -> BodyError:
    with pytest.raises(BodyError) as caught:
        decode(body, now=NOW, limits=limits)
    return caught.value


def batch(body: bytes, limits: Limits = LIMITS) -> BatchResult:
    return decode_batch(body, now=NOW, limits=limits, new_id=counter_ids())


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------------------------------------
# A valid single event


def test_minimal_event_gets_defaults() -> None:
    event = one({"type": "click"})
    assert event == Event("gen-1", "click", NOW, None, None, {})


def test_full_event_keeps_every_field() -> None:
    event = one(
        {
            "id": "evt-1",
            "type": "purchase",
            "timestamp": "2025-11-24T15:59:00Z",
            "user_id": "u1",
            "session_id": "s1",
            "properties": {"amount": 12.5, "tags": ["a", "b"], "meta": {"n": None, "ok": True}},
            "unknown_field": {"ignored": True},
        }
    )
    assert event == Event(
        "evt-1",
        "purchase",
        NOW - 60,
        "u1",
        "s1",
        {"amount": 12.5, "tags": ["a", "b"], "meta": {"n": None, "ok": True}},
        id_given=True,
    )


def test_whitespace_around_the_body_is_accepted() -> None:
    event = decode_event(b' \n\t{"type": "click"}\r\n ', now=NOW, limits=LIMITS)
    assert event.type == "click"


# ---------------------------------------------------------------------------------------------
# Whole-body errors (single event)


@pytest.mark.parametrize("body", [b"", b"   \n\t "])
def test_empty_body(body: bytes) -> None:
    error = body_error(decode_event, body)
    assert (error.status, error.code) == (400, "empty_body")


def test_trailing_data_is_rejected() -> None:
    error = body_error(decode_event, b'{"type":"click"} junk')
    assert (error.status, error.code) == (400, "trailing_data")
    assert "char 17" in error.message


def test_two_json_values_are_trailing_data() -> None:
    error = body_error(decode_event, b'{"type":"a"}{"type":"b"}')
    assert error.code == "trailing_data"


def test_invalid_json_names_the_position() -> None:
    error = body_error(decode_event, b'{"type": "click",, }')
    assert (error.status, error.code) == (400, "invalid_json")
    assert "char 17" in error.message


def test_invalid_utf8_names_the_byte() -> None:
    error = body_error(decode_event, b'{"type": "caf\xc3\x28"}')
    assert (error.status, error.code) == (400, "invalid_json")
    assert "UTF-8" in error.message
    assert "byte 13" in error.message


@pytest.mark.parametrize(
    ("body", "position"),
    [
        (b'{"type": "x", "v": NaN}', 19),
        (b'{"type": "NaN", "v": Infinity}', 21),
        (b'{"type": "x", "v": [1, -Infinity]}', 23),
    ],
)
def test_nan_and_infinity_literals_are_invalid_json(body: bytes, position: int) -> None:
    error = body_error(decode_event, body)
    assert error.code == "invalid_json"
    assert "not allowed" in error.message
    assert f"(char {position})" in error.message


def test_nan_inside_a_string_is_fine() -> None:
    assert one({"type": "NaN", "properties": {"v": "Infinity"}}).type == "NaN"


def test_integer_literal_too_long_for_python_is_invalid_json() -> None:
    error = body_error(decode_event, b'{"type": "x", "n": ' + b"1" * 5000 + b"}")
    assert (error.status, error.code) == (400, "invalid_json")


def test_absurd_nesting_is_a_body_error_not_a_crash() -> None:
    error = body_error(decode_event, b'{"type": "x", "p": ' + b"[" * 20_000 + b"}")
    assert (error.status, error.code) == (400, "too_deep")


@pytest.mark.parametrize(
    ("body", "got"),
    [(b"[]", "an array"), (b"null", "null"), (b'"click"', "a string"), (b"5", "a number")],
)
def test_body_must_be_an_object(body: bytes, got: str) -> None:
    error = body_error(decode_event, body)
    assert (error.status, error.code) == (400, "invalid_body")
    assert got in error.message


def test_event_body_size_limit_counts_bytes() -> None:
    body = encode({"type": "é" * 20})  # 20 characters, 40 bytes of them
    exact = attrs.evolve(LIMITS, max_event_bytes=len(body))
    assert decode_event(body, now=NOW, limits=exact).type == "é" * 20
    error = body_error(decode_event, body, attrs.evolve(LIMITS, max_event_bytes=len(body) - 1))
    assert (error.status, error.code) == (413, "event_too_large")
    assert str(len(body)) in error.message


# ---------------------------------------------------------------------------------------------
# type


def test_type_is_trimmed() -> None:
    assert one({"type": "  page view \n"}).type == "page view"


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({}, "missing_field"),
        ({"type": None}, "invalid_type"),
        ({"type": 5}, "invalid_type"),
        ({"type": ["click"]}, "invalid_type"),
        ({"type": ""}, "empty_field"),
        ({"type": "  \t "}, "empty_field"),
        ({"type": "x" * 129}, "too_long"),
    ],
)
def test_type_rules(event: dict[str, Any], code: str) -> None:
    error = rejected(event)
    assert (error.field, error.code) == ("type", code)


def test_type_message_says_what_was_expected_and_got() -> None:
    error = rejected({"type": 5})
    assert error.message == (
        "type must be a non-empty string of at most 128 characters; got a number"
    )


def test_type_length_is_measured_after_trimming() -> None:
    assert one({"type": " " + "x" * 128 + " "}).type == "x" * 128


# ---------------------------------------------------------------------------------------------
# id


def test_given_id_is_kept_and_no_id_is_generated() -> None:
    calls: list[str] = []

    def new_id() -> str:
        calls.append("called")
        return "generated"

    event = decode_event(b'{"type":"a","id":"mine"}', now=NOW, limits=LIMITS, new_id=new_id)
    assert event.id == "mine"
    assert calls == []


@pytest.mark.parametrize(
    "event", [{"type": "a"}, {"type": "a", "id": None}, {"type": "a", "id": ""}]
)
def test_missing_null_or_empty_id_is_generated(event: dict[str, Any]) -> None:
    assert one(event).id == "gen-1"


def test_id_rules() -> None:
    assert one({"type": "a", "id": "i" * 128}).id == "i" * 128
    assert rejected({"type": "a", "id": "i" * 129}).code == "too_long"
    error = rejected({"type": "a", "id": 7})
    assert (error.field, error.code) == ("id", "invalid_type")


def test_default_ids_are_unique_uuid4_strings() -> None:
    ids = [decode_event(b'{"type":"a"}', now=NOW, limits=LIMITS).id for _ in range(500)]
    assert len(set(ids)) == 500
    assert all(uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value for value in ids)
    assert uuid.UUID(new_uuid4()).version == 4


def test_id_sequence_is_unique_and_prefixed() -> None:
    first, second = id_sequence(), id_sequence()
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert id_sequence("node7")() == "node7-0"


# ---------------------------------------------------------------------------------------------
# timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-24T15:00:00Z", "2025-11-24T15:00:00+00:00"),
        ("2025-11-24T15:00:00z", "2025-11-24T15:00:00+00:00"),
        ("2025-11-24t15:00:00Z", "2025-11-24T15:00:00+00:00"),
        ("2025-11-24T15:00:00-00:00", "2025-11-24T15:00:00+00:00"),
        ("2025-11-24T20:00:00+05:00", "2025-11-24T15:00:00+00:00"),
        ("2025-11-24T10:30:00-04:30", "2025-11-24T15:00:00+00:00"),
        ("2025-11-24T15:00:00.5Z", "2025-11-24T15:00:00.500000+00:00"),
        ("2025-11-24T15:00:00.123456Z", "2025-11-24T15:00:00.123456+00:00"),
        # nanoseconds (Go's format) are truncated to microseconds, not rounded
        ("2025-11-24T15:00:00.123456789Z", "2025-11-24T15:00:00.123456+00:00"),
        ("2025-11-24T15:00:00.9999999Z", "2025-11-24T15:00:00.999999+00:00"),
    ],
)
def test_rfc3339_timestamps_are_normalised_to_utc(text: str, expected: str) -> None:
    assert one({"type": "a", "timestamp": text}).timestamp == iso_seconds(expected)


def test_offset_is_normalised_across_midnight() -> None:
    # The seed's observed case: +05:00 at midnight belongs to the previous UTC day.
    limits = attrs.evolve(LIMITS, max_event_age=10 * 365 * 86400.0)
    event = one({"type": "a", "timestamp": "2025-01-01T00:00:00+05:00"}, limits)
    assert event.timestamp == iso_seconds("2024-12-31T19:00:00+00:00")
    assert datetime.fromtimestamp(event.timestamp, UTC).hour == 19


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-24T15:00:00",  # no offset: ambiguous
        "2025-11-24 15:00:00Z",  # space instead of T
        "2025-11-24",
        "2025-11-24T15:00Z",  # no seconds
        "2025-11-24T15:00:00+0500",
        "2025-11-24T15:00:00+05",
        "2025-11-24T15:00:00,5Z",
        "2025-11-24T15:00:00.Z",
        "2025-11-24T15:00:00+24:00",
        "2025-11-24T15:00:00+05:60",
        "2025-02-29T15:00:00Z",
        "2025-11-24T24:00:00Z",
        "2025-11-24T15:60:00Z",
        "2025-11-24T15:00:60Z",  # leap seconds are not representable
        "0000-01-01T00:00:00Z",
        "20251124T150000Z",
        "2025-W48-1T15:00:00Z",
        "\uff12\uff10\uff12\uff15-11-24T15:00:00Z",  # full-width digits
        "1764000000000",
        "",
        "yesterday",
    ],
)
def test_malformed_timestamps_are_rejected(text: str) -> None:
    error = rejected({"type": "a", "timestamp": text})
    assert (error.field, error.code) == ("timestamp", "invalid_timestamp")
    assert "RFC 3339" in error.message


@pytest.mark.parametrize("value", [b"true", b"[]", b"{}", b"1e400", b"-1e400"])
def test_timestamp_of_wrong_json_type_or_not_finite(value: bytes) -> None:
    with pytest.raises(RejectedEvent) as caught:
        decode_event(b'{"type": "a", "timestamp": ' + value + b"}", now=NOW, limits=LIMITS)
    assert caught.value.error.code == "invalid_timestamp"


@pytest.mark.parametrize(
    ("millis", "expected"),
    [
        (1_763_999_000_000, 1_763_999_000.0),
        (1_763_999_000_250, 1_763_999_000.25),
        (1_763_999_000_250.5, 1_763_999_000.2505),
    ],
)
def test_epoch_milliseconds(millis: float, expected: float) -> None:
    event = one({"type": "a", "timestamp": millis})
    assert event.timestamp == pytest.approx(expected, abs=1e-6)
    assert type(event.timestamp) is float


def test_null_timestamp_means_now() -> None:
    assert one({"type": "a", "timestamp": None}).timestamp == NOW


def test_future_skew_boundary() -> None:
    assert one({"type": "a", "timestamp": (NOW + 300) * 1000}).timestamp == NOW + 300
    error = rejected({"type": "a", "timestamp": (NOW + 301) * 1000})
    assert (error.field, error.code) == ("timestamp", "timestamp_in_future")
    assert "300 seconds" in error.message


def test_age_boundary() -> None:
    oldest = NOW - 604_800
    assert one({"type": "a", "timestamp": oldest * 1000}).timestamp == oldest
    error = rejected({"type": "a", "timestamp": (oldest - 1) * 1000})
    assert (error.field, error.code) == ("timestamp", "timestamp_too_old")


@pytest.mark.parametrize("seconds", [1_764_566_400, 1_763_999_000.5, NOW])
def test_epoch_seconds_are_told_to_be_milliseconds(seconds: float) -> None:
    error = rejected({"type": "a", "timestamp": seconds})
    assert (error.field, error.code) == ("timestamp", "timestamp_too_old")
    assert error.message.endswith(
        f"seconds old; numeric timestamps are epoch milliseconds (got {seconds!r}, "
        "which looks like epoch seconds)"
    )


def test_old_numeric_timestamps_say_they_are_milliseconds() -> None:
    error = rejected({"type": "a", "timestamp": (NOW - 604_801) * 1000})
    assert error.message == (
        "timestamp may be at most 604800 seconds old; got 604801.000 seconds old; "
        "numeric timestamps are epoch milliseconds"
    )
    text = rejected({"type": "a", "timestamp": "2025-01-01T00:00:00Z"}).message
    assert "milliseconds" not in text


def test_go_zero_time_is_too_old_not_missing() -> None:
    error = rejected({"type": "a", "timestamp": "0001-01-01T00:00:00Z"})
    assert error.code == "timestamp_too_old"


def test_far_rfc3339_timestamps() -> None:
    assert rejected({"type": "a", "timestamp": "9999-12-31T23:59:59-23:59"}).code == (
        "timestamp_in_future"
    )
    assert rejected({"type": "a", "timestamp": "0001-01-01T00:00:00+23:59"}).code == (
        "timestamp_too_old"
    )


@pytest.mark.parametrize(("sign", "code"), [(1, "timestamp_in_future"), (-1, "timestamp_too_old")])
def test_integers_beyond_float_range(sign: int, code: str) -> None:
    body = b'{"type": "a", "timestamp": ' + str(sign * 10**400).encode() + b"}"
    with pytest.raises(RejectedEvent) as caught:
        decode_event(body, now=NOW, limits=LIMITS)
    assert caught.value.error.code == code


# ---------------------------------------------------------------------------------------------
# user_id and session_id


@pytest.mark.parametrize("name", ["user_id", "session_id"])
def test_subject_ids(name: str) -> None:
    assert getattr(one({"type": "a", name: "x" * 256}), name) == "x" * 256
    assert getattr(one({"type": "a", name: ""}), name) is None
    assert getattr(one({"type": "a", name: None}), name) is None
    too_long = rejected({"type": "a", name: "x" * 257})
    assert (too_long.field, too_long.code) == (name, "too_long")
    wrong_values: tuple[Any, ...] = (0, False, [], {"id": 1})
    for wrong in wrong_values:
        error = rejected({"type": "a", name: wrong})
        assert (error.field, error.code) == (name, "invalid_type")


# ---------------------------------------------------------------------------------------------
# properties


def test_null_or_missing_properties_are_an_empty_dict() -> None:
    assert one({"type": "a", "properties": None}).properties == {}
    first, second = one({"type": "a"}), one({"type": "a"})
    assert first.properties == {}
    assert first.properties is not second.properties


@pytest.mark.parametrize("value", [[], "x", 1, True])
def test_properties_must_be_an_object(value: Any) -> None:
    error = rejected({"type": "a", "properties": value})
    assert (error.field, error.code) == ("properties", "invalid_type")


def test_property_count_limit() -> None:
    at_limit = {f"k{i}": i for i in range(64)}
    assert one({"type": "a", "properties": at_limit}).properties == at_limit
    error = rejected({"type": "a", "properties": {**at_limit, "one_more": 1}})
    assert (error.field, error.code) == ("properties", "too_many_properties")
    assert "64" in error.message
    assert "65" in error.message


def test_property_key_length_limit_and_truncated_field() -> None:
    assert one({"type": "a", "properties": {"k" * 128: 1}}).properties == {"k" * 128: 1}
    error = rejected({"type": "a", "properties": {"k" * 500: 1}})
    assert error.code == "too_long"
    assert error.field == "properties." + "k" * 40 + "..."
    assert "500" in error.message


def test_nested_key_length_limit() -> None:
    error = rejected({"type": "a", "properties": {"outer": [{"k" * 129: 1}]}})
    assert (error.field, error.code) == ("properties.outer[0]." + "k" * 40 + "...", "too_long")


def nest(levels: int) -> Any:
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"n": value}
    return value


def test_nesting_depth_limit() -> None:
    assert one({"type": "a", "properties": {"v": nest(5)}}).properties == {"v": nest(5)}
    error = rejected({"type": "a", "properties": {"v": nest(6)}})
    assert error.code == "too_deep"
    assert error.field == "properties.v[0].n[0].n[0]"
    assert "5 levels" in error.message


def test_depth_limit_follows_the_limits_object() -> None:
    shallow = attrs.evolve(LIMITS, max_property_depth=1)
    assert one({"type": "a", "properties": {"v": [1, 2]}}, shallow).properties == {"v": [1, 2]}
    assert rejected({"type": "a", "properties": {"v": [[1]]}}, shallow).field == "properties.v[0]"


def test_string_value_length_limit_with_path() -> None:
    ok = {"tags": ["a", "b", "c", "x" * 2048]}
    assert one({"type": "a", "properties": ok}).properties == ok
    error = rejected({"type": "a", "properties": {"tags": ["a", "b", "c", "x" * 2049]}})
    assert (error.field, error.code) == ("properties.tags[3]", "too_long")
    assert "2048" in error.message
    assert "2049" in error.message


def test_top_level_string_property_length() -> None:
    error = rejected({"type": "a", "properties": {"page": "p" * 2049}})
    assert (error.field, error.code) == ("properties.page", "too_long")


def test_overflowing_number_in_properties_is_rejected() -> None:
    body = b'{"type": "purchase", "properties": {"items": [{"amount": 1e400}]}}'
    with pytest.raises(RejectedEvent) as caught:
        decode_event(body, now=NOW, limits=LIMITS)
    assert caught.value.error.code == "invalid_number"
    assert caught.value.error.field == "properties.items[0].amount"


# ---------------------------------------------------------------------------------------------
# Purchases: the amount feeds the revenue counter, which never decreases


@pytest.mark.parametrize(
    ("amount", "got"),
    [
        ("19.5", 'got the string "19.5", not a number'),
        ("", 'got the string "", not a number'),
        (-5, "got a negative number (-5)"),
        (-0.01, "got a negative number (-0.01)"),
        (True, "got a boolean"),
        (False, "got a boolean"),
        ({"value": 3}, "got an object"),
        ([19.5], "got an array"),
    ],
)
def test_purchase_amount_must_be_a_finite_number_not_below_zero(amount: Any, got: str) -> None:
    error = rejected({"type": "purchase", "properties": {"page": "/cart", "amount": amount}})
    assert (error.field, error.code) == ("properties.amount", "invalid_amount")
    assert error.message == (
        f"properties.amount of a purchase event must be a finite number >= 0, or absent; {got}"
    )


def test_purchase_amount_beyond_float_range_is_rejected() -> None:
    body = b'{"type": "purchase", "properties": {"amount": ' + b"9" * 400 + b"}}"
    with pytest.raises(RejectedEvent) as caught:
        decode_event(body, now=NOW, limits=LIMITS)
    assert caught.value.error.code == "invalid_amount"
    assert caught.value.error.message.endswith("got a number too large for a float")


def test_non_finite_purchase_amount_is_an_invalid_number_first() -> None:
    body = b'{"type": "purchase", "properties": {"amount": 1e999}}'
    with pytest.raises(RejectedEvent) as caught:
        decode_event(body, now=NOW, limits=LIMITS)
    assert (caught.value.error.field, caught.value.error.code) == (
        "properties.amount",
        "invalid_number",
    )


@pytest.mark.parametrize(
    "properties",
    [
        None,
        {},
        {"coupon": "X"},
        {"amount": None},
        {"amount": 0},
        {"amount": 19.5},
        {"amount": 1e300},
    ],
)
def test_purchase_without_amount_or_with_a_good_one_is_accepted(properties: Any) -> None:
    event = one({"type": "purchase", "properties": properties})
    assert event.type == "purchase"
    assert event.properties == (properties or {})


def test_the_amount_rule_is_for_purchases_only() -> None:
    assert one({"type": "refund", "properties": {"amount": -5}}).properties == {"amount": -5}
    assert one({"type": "Purchase", "properties": {"amount": "5"}}).type == "Purchase"
    assert rejected({"type": " purchase\t", "properties": {"amount": -5}}).code == (
        "invalid_amount"
    )


def test_other_rules_are_judged_before_the_amount() -> None:
    error = rejected({"type": "purchase", "user_id": 5, "properties": {"amount": "1"}})
    assert error.field == "user_id"
    too_many = {f"k{n}": n for n in range(LIMITS.max_properties)} | {"amount": "1"}
    assert rejected({"type": "purchase", "properties": too_many}).code == "too_many_properties"


def test_bad_purchase_amounts_in_a_batch_are_rejected_with_their_index() -> None:
    elements = [
        {"type": "purchase", "properties": {"amount": 19.5}},
        {"type": "purchase", "properties": {"amount": "19.5"}},
        {"type": "purchase"},
        {"type": "purchase", "properties": {"amount": -5}},
    ]
    result = batch(encode(elements))
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (1, "properties.amount", "invalid_amount"),
        (3, "properties.amount", "invalid_amount"),
    ]
    assert [e.id for e in result.events] == ["gen-1", "gen-2"]
    assert result.total == 4


# ---------------------------------------------------------------------------------------------
# Unicode


def test_surrogate_pair_escape_is_decoded() -> None:
    event = decode_event(b'{"type": "\\ud83d\\ude00"}', now=NOW, limits=LIMITS)
    assert event.type == "\N{GRINNING FACE}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"type": "a\\ud800"}', "type"),
        (b'{"type": "a", "user_id": "\\udc00"}', "user_id"),
        (b'{"type": "a", "properties": {"t": ["ok", "\\ud83d"]}}', "properties.t[1]"),
        (b'{"type": "a", "properties": {"\\ud83d": 1}}', "properties.\ud83d"),
    ],
)
def test_lone_surrogates_are_rejected(body: bytes, field: str) -> None:
    with pytest.raises(RejectedEvent) as caught:
        decode_event(body, now=NOW, limits=LIMITS)
    assert (caught.value.error.code, caught.value.error.field) == ("invalid_unicode", field)


def test_lone_surrogate_in_an_ignored_field_is_harmless() -> None:
    assert decode_event(b'{"type": "a", "x": "\\ud800"}', now=NOW, limits=LIMITS).type == "a"


# ---------------------------------------------------------------------------------------------
# Errors as values


def test_first_broken_rule_wins() -> None:
    error = rejected({"type": 5, "timestamp": "bad", "properties": []})
    assert error.field == "type"
    error = rejected({"type": "a", "timestamp": "bad", "properties": []})
    assert error.field == "timestamp"


def test_error_as_dict() -> None:
    with_index = EventError(3, "type", "missing_field", "type is required")
    assert list(with_index.as_dict().items()) == [
        ("index", 3),
        ("code", "missing_field"),
        ("field", "type"),
        ("message", "type is required"),
    ]
    assert "index" not in EventError(None, "type", "missing_field", "m").as_dict()


# ---------------------------------------------------------------------------------------------
# Batches


def test_batch_array() -> None:
    result = batch(encode([{"type": "a"}, {"type": "b", "id": "mine"}]))
    assert result == BatchResult(
        (Event("gen-1", "a", NOW), Event("mine", "b", NOW, id_given=True)), (), total=2
    )


def test_batch_object_form_ignores_other_keys() -> None:
    body = encode({"meta": {"events": 1}, "events": [{"type": "a"}], "sent_at": 5})
    result = batch(body)
    assert [event.type for event in result.events] == ["a"]
    assert result.total == 1


def test_batch_errors_carry_the_real_index() -> None:
    elements = [
        {"type": "ok0"},
        {"no": "type"},
        {"type": "ok2"},
        5,
        {"type": "ok4"},
        {"type": "x", "timestamp": "nope"},
        None,
    ]
    result = batch(encode(elements))
    assert [event.type for event in result.events] == ["ok0", "ok2", "ok4"]
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (1, "type", "missing_field"),
        (3, "", "invalid_type"),
        (5, "timestamp", "invalid_timestamp"),
        (6, "", "invalid_type"),
    ]
    assert result.total == 7


def test_generated_ids_only_for_valid_events_without_one() -> None:
    elements = [{"type": "a"}, {"type": ""}, {"type": "b", "id": "given"}, {"type": "c", "id": ""}]
    result = batch(encode(elements))
    assert [event.id for event in result.events] == ["gen-1", "given", "gen-2"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_body"),
        (b" \n ", 400, "empty_body"),
        (b"[]", 400, "empty_batch"),
        (b" [ ] ", 400, "empty_batch"),
        (b"null", 400, "empty_batch"),
        (b'{"events": []}', 400, "empty_batch"),
        (b'{"events": null}', 400, "empty_batch"),
        (b"{}", 400, "invalid_body"),
        (b'{"event": []}', 400, "invalid_body"),
        (b'{"events": {"type": "a"}}', 400, "invalid_body"),
        (b'{"events": "a"}', 400, "invalid_body"),
        (b'"events"', 400, "invalid_body"),
        (b"5", 400, "invalid_body"),
        (b'[{"type": "a"}] []', 400, "trailing_data"),
        (b'{"events": [{"type": "a"}]} x', 400, "trailing_data"),
        (b'[{"type": "a"}', 400, "invalid_json"),
        (b'[{"type": "a"},]', 400, "invalid_json"),
        (b'[{"type": "a"} {"type": "b"}]', 400, "invalid_json"),
        (b'{"events": [{"type": "a"}],}', 400, "invalid_json"),
        (b'{"events" [{"type": "a"}]}', 400, "invalid_json"),
        (b'{"events": [{"type": "a"}] "x": 1}', 400, "invalid_json"),
        (b"{events: []}", 400, "invalid_json"),
        (b'[{"type": "a"}, NaN]', 400, "invalid_json"),
        (b'[{"type": "a", "x": "\xff"}]', 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "too_deep"),
    ],
)
def test_batch_body_errors(body: bytes, status: int, code: str) -> None:
    error = body_error(decode_batch, body)
    assert (error.status, error.code) == (status, code)
    assert error.message
    assert error.errors == ()


def test_batch_object_keeps_the_last_events_key_like_json() -> None:
    assert batch(b'{"events": 5, "events": [{"type": "a"}]}').total == 1
    assert body_error(decode_batch, b'{"events": [{"type": "a"}], "events": 5}').code == (
        "invalid_body"
    )


def test_batch_count_limit() -> None:
    limits = attrs.evolve(LIMITS, max_batch_events=3)
    assert batch(encode([{"type": "a"}] * 3), limits).total == 3
    error = body_error(decode_batch, encode([{"type": "a"}] * 4), limits)
    assert (error.status, error.code) == (413, "batch_too_large")
    assert "at most 3" in error.message
    assert "got 4" in error.message


def test_default_batch_limit_accepts_1000() -> None:
    assert len(batch(encode([{"type": "a"}] * 1000)).events) == 1000
    assert body_error(decode_batch, encode([{"type": "a"}] * 1001)).status == 413


def test_batch_body_size_limit() -> None:
    body = encode([{"type": "a"}])
    assert batch(body, attrs.evolve(LIMITS, max_body_bytes=len(body))).total == 1
    error = body_error(decode_batch, body, attrs.evolve(LIMITS, max_body_bytes=len(body) - 1))
    assert (error.status, error.code) == (413, "body_too_large")


def test_oversized_element_is_rejected_alone() -> None:
    small = b'{"type": "a"}'
    big = b'{"type": "b", "p": "' + b"x" * 80 + b'"}'
    body = b"[" + small + b", " + big + b",\n  " + small + b"]"
    limits = attrs.evolve(LIMITS, max_event_bytes=len(big) - 1)
    result = batch(body, limits)
    assert [event.type for event in result.events] == ["a", "a"]
    assert [(e.index, e.code) for e in result.errors] == [(1, "event_too_large")]
    assert str(len(big)) in result.errors[0].message
    assert batch(body, attrs.evolve(limits, max_event_bytes=len(big))).errors == ()


def test_element_size_counts_whitespace_inside_the_element() -> None:
    padded = b'{"type":    "a"   }'
    body = b"[" + padded + b", {}]"
    limits = attrs.evolve(LIMITS, max_event_bytes=len(padded) - 1)
    assert [(e.index, e.code) for e in batch(body, limits).errors] == [
        (0, "event_too_large"),
        (1, "missing_field"),
    ]


@pytest.mark.parametrize("in_object", [False, True])
def test_element_size_is_counted_in_utf8_bytes(in_object: bool) -> None:
    accented = encode({"type": "é" * 30})  # 42 characters, 72 bytes
    assert len(accented.decode("utf-8")) < len(accented)
    elements = b"[" + accented + b", " + accented + b"]"
    body = b'{"events": ' + elements + b"}" if in_object else elements
    over = attrs.evolve(LIMITS, max_event_bytes=len(accented) - 1)
    assert [(e.index, e.code) for e in batch(body, over).errors] == [
        (0, "event_too_large"),
        (1, "event_too_large"),
    ]
    exact = attrs.evolve(LIMITS, max_event_bytes=len(accented))
    assert [event.type for event in batch(body, exact).events] == ["é" * 30, "é" * 30]


def test_lone_surrogate_is_rejected_per_element() -> None:
    body = b'[{"type": "a"}, {"type": "\\udfff"}, {"type": "\\ud83d\\ude00"}]'
    for max_event_bytes in (len(body), 30):  # one scan of the body, and element by element
        result = batch(body, attrs.evolve(LIMITS, max_event_bytes=max_event_bytes))
        assert [(e.index, e.code) for e in result.errors] == [(1, "invalid_unicode")]
        assert [event.type for event in result.events] == ["a", "\N{GRINNING FACE}"]


PARITY_BODIES = [
    b'[{"type": "a"}, {"type": 5}, 7, {"type": "b", "timestamp": "2025-11-24T15:00:00Z"}]',
    b'{"x": [1, {"events": 2}], "events": [{"type": "a"}, []], "y": null}',
    b'{ "events" : [ {"type":"a"} , {"type":"b"} ] , "z" : "\\u00e9" }',
    b'[\n  {"type": "caf\xc3\xa9", "user_id": "\xe2\x82\xac"},\n  {"type": ""}\n]',
    b'{"events": {"type": "a"}, "other": 1}',
    b'{"events": null, "other": [1, 2]}',
    b'{"other": [1, 2, 3, 4, 5, 6, 7, 8, 9]}',
    b'"just a string, no events at all"',
    b'[{"type": "a"}, {"type": "b"}] trailing',
    b'{"events": [{"type": "a"}]}{"events": []}',
    b'[{"type": "a"}, {"type": "b"},, {"type": "c"}]',
    b'[{"type": "a"}, {"type": "b"} {"type": "c"}]',
    b'[{"type": "a"}, {"type": "b"}, ]',
    b'[{"type": "a"}, {"type": "b"}, {"type": "c"',
    b'{"events": [{"type": "a"}, {"type": "b"}], "x" 1}',
    b'{"events": [{"type": "a"}, {"type": "b"}], "x": 1,}',
    b'{"events": [{"type": "a"}, {"type": "b"}], "x": 1 "y": 2}',
    b'{"events": [{"type": "a"}, {"type": "b"}], "unterminated',
    b'{"events": [{"type": "a"}, {"type": "b", "v": -Infinity}]}',
    b'[{"type": "a", "s": "NaN"}, {"type": "b"}, NaN]',
]


@pytest.mark.parametrize("body", PARITY_BODIES)
def test_large_and_small_bodies_decode_identically(body: bytes) -> None:
    """Bodies up to max_event_bytes take one fast scan; larger ones are parsed element by
    element to measure each: both must give the same answer, errors and messages included."""

    def outcome(max_event_bytes: int) -> Any:
        limits = attrs.evolve(LIMITS, max_event_bytes=max_event_bytes)
        try:
            return batch(body, limits)
        except BodyError as error:
            return (error.status, error.code, error.message)

    assert outcome(len(body)) == outcome(len(body) - 1)

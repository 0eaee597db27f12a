"""Property tests (hypothesis) for the JSON -> Event decoder: totality, invariants, batches.

Every test is derandomized with a fixed example budget, so a run is repeatable.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
from attrs import frozen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy, composite

from twisted_rta.config import LimitsConfig
from twisted_rta.events.decode import decode_batch, decode_event
from twisted_rta.events.model import BatchResult, BodyError, Event, EventError, RejectedEvent
from twisted_rta.events.rules import RFC3339

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GENERATED = "generated-id"

PROPERTY = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The codes the README documents: per event (with a field) and for a whole body.
EVENT_CODES = frozenset(
    {
        "missing_field",
        "invalid_type",
        "empty_field",
        "too_long",
        "invalid_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "too_many_properties",
        "too_deep",
        "invalid_number",
        "invalid_amount",  # only for purchase events
        "invalid_unicode",
        "event_too_large",  # only ever per element of a batch
    }
)
BODY_CODES = {
    "empty_body": 400,
    "invalid_json": 400,
    "trailing_data": 400,
    "invalid_body": 400,
    "too_deep": 400,
    "empty_batch": 400,
    "body_too_large": 413,
    "event_too_large": 413,
    "batch_too_large": 413,
}
TOP_FIELDS = ("type", "id", "timestamp", "user_id", "session_id")


# Small limits, so random data crosses every one of them often.
LIMITS = LimitsConfig(
    max_body_bytes=8192,
    max_batch_events=8,
    max_event_bytes=1024,
    max_properties=4,
    max_property_depth=2,
    max_property_key_length=8,
    max_string_length=24,
    max_event_age=86_400.0,
)
ROOMY = attrs.evolve(LIMITS, max_event_bytes=1 << 20, max_body_bytes=1 << 20)
OLDEST = NOW - LIMITS.max_event_age
NEWEST = NOW + LIMITS.max_future_skew


def constant_id() -> str:
    return GENERATED


def counter_ids() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"gen-{next(numbers)}"


# ---------------------------------------------------------------------------------------------
# Checking what the decoder returns or raises


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_property_value(value: Any, level: int, limits: LimitsConfig) -> None:
    """``level`` is the depth of the container holding ``value`` (properties itself is 0)."""
    kind = type(value)
    if kind is str:
        assert len(value) <= limits.max_string_length
        assert encodable(value)
    elif kind is float:
        assert math.isfinite(value)
    elif kind is dict or kind is list:
        assert level < limits.max_property_depth
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if kind is dict:
                assert type(key) is str
                assert len(key) <= limits.max_property_key_length
                assert encodable(key)
            check_property_value(item, level + 1, limits)
    else:
        assert value is None or kind in (bool, int)


def check_event(event: Any, limits: LimitsConfig = LIMITS, now: float = NOW) -> None:
    assert type(event) is Event
    assert type(event.type) is str
    assert event.type == event.type.strip()
    assert 1 <= len(event.type) <= 128
    assert type(event.id) is str
    assert 1 <= len(event.id) <= 128
    for subject in (event.user_id, event.session_id):
        assert subject is None or (type(subject) is str and 1 <= len(subject) <= 256)
    for text in (event.id, event.type, event.user_id, event.session_id):
        assert text is None or encodable(text)
    assert type(event.timestamp) is float
    assert math.isfinite(event.timestamp)
    assert now - limits.max_event_age <= event.timestamp <= now + limits.max_future_skew
    assert type(event.properties) is dict
    assert len(event.properties) <= limits.max_properties
    for key, value in event.properties.items():
        assert type(key) is str
        assert len(key) <= limits.max_property_key_length
        assert encodable(key)
        check_property_value(value, 0, limits)


def check_event_error(error: Any, index: int | None) -> None:
    assert type(error) is EventError
    assert error.index == index
    assert error.code in EVENT_CODES
    assert type(error.field) is str
    assert type(error.message) is str
    assert error.message
    if error.code == "event_too_large" or (error.code == "invalid_type" and error.field == ""):
        assert index is not None  # only batch elements are judged as a whole
    else:
        assert error.field in TOP_FIELDS or error.field.startswith("properties"), error


def check_body_error(error: BodyError) -> None:
    assert BODY_CODES.get(error.code) == error.status, (error.code, error.status)
    assert error.message
    assert str(error) == error.message
    assert error.errors == ()


def check_batch(result: Any, limits: LimitsConfig = LIMITS) -> None:
    assert type(result) is BatchResult
    assert 1 <= result.total <= limits.max_batch_events
    assert len(result.events) + len(result.errors) == result.total
    indexes = [error.index for error in result.errors]
    assert all(type(index) is int for index in indexes)
    assert indexes == sorted(set(indexes)), indexes  # strictly increasing, so unique
    assert all(0 <= index < result.total for index in indexes)
    for error in result.errors:
        check_event_error(error, error.index)
    for event in result.events:
        check_event(event, limits)


def single_outcome(body: bytes, limits: LimitsConfig = LIMITS) -> Event | EventError | BodyError:
    """Decode one event; any exception but the two documented ones fails the test."""
    try:
        event = decode_event(body, now=NOW, limits=limits, new_id=constant_id)
    except RejectedEvent as rejected:
        assert rejected.status == 400
        assert str(rejected) == rejected.error.message
        check_event_error(rejected.error, None)
        assert rejected.error.code != "event_too_large"
        return rejected.error
    except BodyError as error:
        check_body_error(error)
        assert error.code not in ("empty_batch", "batch_too_large", "body_too_large")
        return error
    check_event(event, limits)
    return event


def batch_outcome(body: bytes, limits: LimitsConfig = LIMITS) -> BatchResult | BodyError:
    try:
        result = decode_batch(body, now=NOW, limits=limits, new_id=constant_id)
    except BodyError as error:
        check_body_error(error)
        assert error.code != "event_too_large"
        return error
    check_batch(result, limits)
    return result


# ---------------------------------------------------------------------------------------------
# Strategies: JSON values and their encodings

WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000"
lone_surrogates = st.characters(categories=["Cs"])
texts = st.text(max_size=12)
surrogate_texts = st.builds(
    lambda left, lone, right: left + lone + right, texts, lone_surrogates, texts
)
texts_with_surrogates = st.one_of(texts, surrogate_texts)
huge_ints = st.integers(min_value=-(10**400), max_value=10**400)
any_floats = st.floats(allow_nan=True, allow_infinity=True)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)


def json_values(
    strings: SearchStrategy[str] = texts_with_surrogates,
    floats: SearchStrategy[float] = any_floats,
    max_leaves: int = 10,
) -> SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints, floats, strings)
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(strings, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


@frozen
class Style:
    """How a value is written: json.dumps options plus two twists json.dumps cannot do."""

    ensure_ascii: bool
    indent: int | None
    compact: bool
    overflow_infinity: bool  # Infinity -> 1e400: valid JSON that decodes to inf

    def encode(self, value: Any) -> bytes:
        text = json.dumps(
            value,
            ensure_ascii=self.ensure_ascii,
            indent=self.indent,
            separators=(",", ":") if self.compact else None,
            allow_nan=True,
        )
        if self.overflow_infinity:
            text = text.replace("Infinity", "1e400")  # inside strings too: still valid JSON
        # A lone surrogate with ensure_ascii=False becomes bytes that are not UTF-8.
        return text.encode("utf-8", "surrogatepass")


styles = st.builds(
    Style,
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, None, 0, 2]),
    compact=st.booleans(),
    overflow_infinity=st.booleans(),
)


# Event-shaped objects: each field is valid three times in four, so that both accepted and
# rejected events are common; the invalid values sit on and past every limit.

padding = st.text(st.sampled_from(WHITESPACE), max_size=3)
letters = st.characters(exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"])
stripped_types = st.one_of(
    # Not "purchase": its properties.amount has a rule of its own (see BREAKERS).
    st.text(letters, min_size=1, max_size=20).filter(lambda text: text != "purchase"),
    st.just("t" * 128),
)
valid_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, finite_floats, st.text(max_size=24)
)
valid_keys = st.text(max_size=8)
level_two = st.one_of(
    valid_scalars,
    st.lists(valid_scalars, max_size=2),
    st.dictionaries(valid_keys, valid_scalars, max_size=2),
)
level_one = st.one_of(
    valid_scalars,
    st.lists(level_two, max_size=2),
    st.dictionaries(valid_keys, level_two, max_size=2),
)
valid_properties = st.dictionaries(valid_keys, level_one, max_size=4)
valid_ids = st.one_of(st.text(min_size=1, max_size=16), st.just("i" * 128))
valid_subjects = st.one_of(st.text(min_size=1, max_size=16), st.just("s" * 256))


@composite
def mostly(draw: DrawFn, valid: SearchStrategy[Any], invalid: SearchStrategy[Any]) -> Any:
    return draw(valid if draw(st.integers(0, 3)) else invalid)


type_values = mostly(
    st.builds(lambda left, core, right: left + core + right, padding, stripped_types, padding),
    st.one_of(
        surrogate_texts,
        st.integers(126, 131).map(lambda n: "t" * n),
        st.integers(126, 131).map(lambda n: " " + "t" * n + "\t"),
        padding,
        st.none(),
        st.booleans(),
        st.integers(),
        st.lists(texts, max_size=2),
        st.dictionaries(texts, texts, max_size=1),
    ),
)
id_values = mostly(
    st.one_of(st.just(""), st.none(), valid_ids),
    st.one_of(
        surrogate_texts,
        st.integers(127, 130).map(lambda n: "i" * n),
        st.booleans(),
        st.integers(),
        finite_floats,
        st.lists(texts, max_size=2),
    ),
)
subject_values = mostly(
    st.one_of(st.just(""), st.none(), valid_subjects),
    st.one_of(
        surrogate_texts,
        st.integers(255, 258).map(lambda n: "s" * n),
        st.booleans(),
        st.integers(),
        st.dictionaries(texts, st.integers(), max_size=1),
    ),
)


@composite
def rfc3339_texts(draw: DrawFn, earliest: float, latest: float) -> str:
    """An RFC 3339 string for a moment in [earliest, latest], in any offset and letter case."""
    micros = draw(st.integers(int(earliest * 1_000_000), int(latest * 1_000_000)))
    moment = EPOCH + timedelta(microseconds=micros)
    offset = timedelta(minutes=draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1)))
    text = moment.astimezone(timezone(offset)).isoformat()
    if moment.microsecond == 0 and draw(st.booleans()):
        text = text[:19] + ".0" + text[19:]
    elif moment.microsecond and draw(st.booleans()):
        text = text[:26] + draw(st.text("0123456789", min_size=1, max_size=5)) + text[26:]
    if text.endswith("+00:00"):
        text = text[:-6] + draw(st.sampled_from(["+00:00", "-00:00", "Z", "z"]))
    if draw(st.booleans()):
        text = text[:10] + "t" + text[11:]
    return text


timestamp_values = mostly(
    st.one_of(
        st.none(),
        st.integers(int(OLDEST * 1000), int(NEWEST * 1000)),
        st.floats(OLDEST * 1000, NEWEST * 1000),
        rfc3339_texts(OLDEST, NEWEST),
    ),
    st.one_of(
        st.integers(int(OLDEST * 1000) - 2000, int(OLDEST * 1000) + 2000),
        st.integers(int(NEWEST * 1000) - 2000, int(NEWEST * 1000) + 2000),
        rfc3339_texts(OLDEST - 600, NEWEST + 600),
        rfc3339_texts(-62_135_596_800 + 86_400, 253_402_300_799 - 86_400),  # years 1..9999
        st.from_regex(RFC3339, fullmatch=True),
        any_floats,
        st.integers(),
        huge_ints,
        texts_with_surrogates,
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(texts, st.integers(), max_size=1),
    ),
)
short_keys = st.text(max_size=10)
one_or_two = {"min_size": 1, "max_size": 2}
property_values = mostly(
    st.one_of(st.none(), valid_properties),
    st.one_of(
        st.dictionaries(st.text(min_size=9, max_size=12), valid_scalars, **one_or_two),
        st.dictionaries(valid_keys, st.text(min_size=25, max_size=30), **one_or_two),
        st.dictionaries(valid_keys, valid_scalars, min_size=5, max_size=6),
        st.dictionaries(valid_keys, st.just([[[]]]) | st.just({"a": [{}]}), **one_or_two),
        st.dictionaries(valid_keys, st.sampled_from([math.inf, [-math.inf]]), **one_or_two),
        st.dictionaries(st.one_of(valid_keys, surrogate_texts), surrogate_texts, **one_or_two),
        st.dictionaries(short_keys, json_values(st.text(max_size=26), max_leaves=6), max_size=6),
        json_values(max_leaves=4),
    ),
)
extra_values = mostly(json_values(floats=finite_floats, max_leaves=4), json_values(max_leaves=4))

OPTIONAL_FIELDS = {
    "id": id_values,
    "user_id": subject_values,
    "session_id": subject_values,
    "timestamp": timestamp_values,
    "properties": property_values,
    "extra": extra_values,
}
event_objects = st.one_of(
    st.fixed_dictionaries({"type": type_values}, optional=OPTIONAL_FIELDS),
    st.fixed_dictionaries({"type": type_values}, optional=OPTIONAL_FIELDS),
    st.fixed_dictionaries({}, optional={"type": type_values, **OPTIONAL_FIELDS}),
)
batch_bodies = st.one_of(
    st.lists(
        st.one_of(event_objects, event_objects, json_values(max_leaves=3)),
        max_size=LIMITS.max_batch_events + 1,
    ),
    st.fixed_dictionaries(
        {"events": st.lists(event_objects, max_size=LIMITS.max_batch_events + 1)},
        optional={"meta": extra_values, "events_": extra_values},
    ),
    json_values(max_leaves=6),
)


@composite
def mutated(draw: DrawFn, bodies: SearchStrategy[bytes]) -> bytes:
    """A body with a few bytes deleted, replaced or inserted (mostly JSON punctuation)."""
    body = bytearray(draw(bodies))
    alphabet = st.sampled_from([*b'{}[]:,"\\ \n0-.eEtfnuNI', 0x80, 0xC3, 0xED, 0xFF])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "insert" or position == len(body):
            body[position:position] = bytes([draw(alphabet)])
        elif action == "delete":
            del body[position]
        else:
            body[position] = draw(alphabet)
    return bytes(body)


encoded_events = st.builds(Style.encode, styles, event_objects)
encoded_batches = st.builds(Style.encode, styles, batch_bodies)
raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.text(st.sampled_from('{}[]:," \\0123456789.eE-+tfalsenuNIy\u00e9\ud83d'), max_size=40).map(
        lambda text: text.encode("utf-8", "surrogatepass")
    ),
    mutated(encoded_events),
    mutated(encoded_batches),
    st.integers(1, 6000).map(lambda n: b'{"type": "a", "timestamp": ' + b"9" * n + b"}"),
    st.integers(1, 3000).map(lambda n: b'[{"type": "a", "p": ' + b"[" * n + b"]" * n + b"}]"),
)


# ---------------------------------------------------------------------------------------------
# 1. Totality: arbitrary bytes


@PROPERTY
@given(raw_bodies)
def test_arbitrary_bytes_never_escape_other_exceptions(body: bytes) -> None:
    single_outcome(body)
    batch_outcome(body)


# ---------------------------------------------------------------------------------------------
# 2. Arbitrary JSON values, and event-shaped objects: totality plus invariants


@PROPERTY
@given(json_values(), styles)
def test_arbitrary_json_values(value: Any, style: Style) -> None:
    body = style.encode(value)
    single_outcome(body)
    batch_outcome(body)


def expected_timestamp(raw: Any) -> float:
    if raw is None:
        return NOW
    if type(raw) is str:
        return datetime.fromisoformat(raw.upper()).timestamp()
    return raw / 1000


def reencode(event: Event) -> bytes:
    """The event as a client would send it again, timestamp as epoch milliseconds."""
    return json.dumps(
        {
            "id": event.id,
            "type": event.type,
            "timestamp": event.timestamp * 1000,
            "user_id": event.user_id,
            "session_id": event.session_id,
            "properties": event.properties,
        }
    ).encode()


@PROPERTY
@given(event_objects, styles)
def test_event_shaped_objects(obj: dict[str, Any], style: Style) -> None:
    body = style.encode(obj)
    outcome = single_outcome(body)
    if type(outcome) is not Event:
        return
    # What was accepted is exactly what the body said (read back with the json module).
    sent = json.loads(body)
    assert outcome.type == sent["type"].strip()
    assert outcome.id == (sent.get("id") or GENERATED)
    assert outcome.id_given == bool(sent.get("id"))
    assert outcome.user_id == (sent.get("user_id") or None)
    assert outcome.session_id == (sent.get("session_id") or None)
    assert outcome.properties == (sent.get("properties") or {})
    assert outcome.timestamp == expected_timestamp(sent.get("timestamp"))
    # Accepted events are accepted again when sent back (milliseconds may round the time;
    # the id goes back with them, so it is given then).
    again = decode_event(reencode(outcome), now=NOW, limits=LIMITS, new_id=constant_id)
    assert attrs.evolve(again, timestamp=outcome.timestamp) == attrs.evolve(outcome, id_given=True)
    assert math.isclose(again.timestamp, outcome.timestamp, rel_tol=0, abs_tol=1e-6)


@PROPERTY
@given(batch_bodies, styles)
def test_batches_of_event_shaped_objects(value: Any, style: Style) -> None:
    body = style.encode(value)
    outcome = batch_outcome(body)
    if type(outcome) is not BatchResult:
        return
    # Each element is judged exactly as the same object sent alone would be.
    sent = json.loads(body)
    elements = sent if type(sent) is list else sent["events"]
    assert len(elements) == outcome.total
    errors = {error.index: error for error in outcome.errors}
    events = iter(outcome.events)
    for index, element in enumerate(elements):
        error = errors.get(index)
        if error is not None and error.field == "":  # judged as a whole, not as an event
            assert error.code == "event_too_large" or type(element) is not dict
            continue
        # An inf here came from 1e400, so it must be written that way again.
        alone = single_outcome(Style(True, None, False, True).encode(element), ROOMY)
        if error is None:
            assert alone == next(events)
        else:
            assert type(alone) is EventError
            assert attrs.evolve(alone, index=index) == error


@composite
def repeated_events_keys(draw: DrawFn) -> bytes:
    """An object with "events" twice (json.dumps never writes one): the last one counts."""
    style = draw(styles)
    first, second = draw(batch_bodies), draw(batch_bodies)
    middle = draw(st.dictionaries(st.sampled_from(["a", "events_", "x"]), extra_values))
    parts = [b'"events": ' + style.encode(first)]
    parts += [style.encode(key) + b": " + style.encode(value) for key, value in middle.items()]
    parts.append(b'"events": ' + style.encode(second))
    return b"{" + b", ".join(parts) + b"}"


@PROPERTY
@given(st.one_of(encoded_batches, mutated(encoded_batches), repeated_events_keys()))
def test_large_and_small_bodies_decode_identically(body: bytes) -> None:
    """Bodies up to max_event_bytes take one scan; larger ones are parsed element by element
    (to measure each): both must agree, messages included, when no element is too large."""

    def outcome(max_event_bytes: int) -> Any:
        limits = attrs.evolve(LIMITS, max_event_bytes=max_event_bytes, max_body_bytes=1 << 20)
        result = batch_outcome(body, limits)
        if type(result) is BodyError:
            return (result.status, result.code, result.message)
        return result

    assert outcome(len(body)) == outcome(max(len(body) - 1, 1))


# ---------------------------------------------------------------------------------------------
# 3. Batches: valid events with invalid ones at known positions


@composite
def valid_events(draw: DrawFn) -> tuple[dict[str, Any], Event]:
    """A valid event object and the Event it must decode to (``id`` "": to be generated)."""
    type_ = draw(stripped_types)
    obj: dict[str, Any] = {"type": draw(padding) + type_ + draw(padding)}
    event_id = draw(st.one_of(st.none(), valid_ids))
    if event_id is not None or draw(st.booleans()):
        obj["id"] = event_id if event_id is not None else draw(st.sampled_from(["", None]))
    timestamp = NOW
    match draw(st.sampled_from(["absent", "null", "millis", "rfc3339"])):
        case "null":
            obj["timestamp"] = None
        case "millis":
            millis = draw(st.integers(int(OLDEST * 1000), int(NEWEST * 1000)))
            obj["timestamp"] = millis
            timestamp = millis / 1000
        case "rfc3339":
            micros = draw(st.integers(int(OLDEST * 1_000_000), int(NEWEST * 1_000_000)))
            obj["timestamp"] = draw(rfc3339_texts(micros / 1e6, micros / 1e6))
            timestamp = timedelta(microseconds=micros).total_seconds()
    subjects = {}
    for name in ("user_id", "session_id"):
        value = draw(st.one_of(st.none(), st.just(""), valid_subjects))
        if value is not None or draw(st.booleans()):
            obj[name] = value
        subjects[name] = value or None
    properties = draw(st.one_of(st.none(), valid_properties))
    if properties is not None or draw(st.booleans()):
        obj["properties"] = properties
    if not draw(st.integers(0, 3)):
        obj["context"] = draw(json_values(st.text(max_size=8), finite_floats, max_leaves=4))
    expected = Event(
        event_id or "",
        type_,
        timestamp,
        properties=properties or {},
        id_given=bool(event_id),
        **subjects,
    )
    return obj, expected


# How to break a valid event object (one rule only) and the code that must result.
BREAKERS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "not_an_object": ("invalid_type", lambda obj: [obj]),
    "null_element": ("invalid_type", lambda obj: None),
    "no_type": ("missing_field", lambda obj: {k: v for k, v in obj.items() if k != "type"}),
    "blank_type": ("empty_field", lambda obj: {**obj, "type": " \t"}),
    "long_type": ("too_long", lambda obj: {**obj, "type": "t" * 129}),
    "numeric_type": ("invalid_type", lambda obj: {**obj, "type": 5}),
    "long_id": ("too_long", lambda obj: {**obj, "id": "i" * 129}),
    "bad_timestamp": ("invalid_timestamp", lambda obj: {**obj, "timestamp": "yesterday"}),
    "future": ("timestamp_in_future", lambda obj: {**obj, "timestamp": (NEWEST + 1) * 1000}),
    "old": ("timestamp_too_old", lambda obj: {**obj, "timestamp": (OLDEST - 1) * 1000}),
    "user_id": ("invalid_type", lambda obj: {**obj, "user_id": 7}),
    "session_id": ("too_long", lambda obj: {**obj, "session_id": "s" * 257}),
    "properties": ("invalid_type", lambda obj: {**obj, "properties": []}),
    "many": ("too_many_properties", lambda obj: {**obj, "properties": dict.fromkeys("abcde")}),
    "long_key": ("too_long", lambda obj: {**obj, "properties": {"k" * 9: 1}}),
    "long_string": ("too_long", lambda obj: {**obj, "properties": {"k": ["x" * 25]}}),
    "deep": ("too_deep", lambda obj: {**obj, "properties": {"k": [[[]]]}}),
    # An explicit id: the decoder draws a new id before its surrogate check (a wasted id),
    # which would shift the generated ids of the valid events that follow.
    "surrogate": ("invalid_unicode", lambda obj: {**obj, "id": "x", "user_id": "u\udc00"}),
    "long_user_id": ("too_long", lambda obj: {**obj, "user_id": "u" * 257}),
    "infinite": ("invalid_number", lambda obj: {**obj, "properties": {"k": [math.inf]}}),
    "amount": (
        "invalid_amount",
        lambda obj: {**obj, "type": "purchase", "properties": {"amount": "19.5"}},
    ),
    "oversized": ("event_too_large", lambda obj: obj),  # made once the limit is known
}
BREAKING = [*sorted(BREAKERS), "oversized", "oversized"]  # the one that varies the most


@composite
def mixed_batches(draw: DrawFn) -> tuple[bytes, LimitsConfig, list[Event], list[tuple[int, str]]]:
    """A batch body, its limits, the Events it must yield and its (index, code) errors."""
    slots = draw(st.lists(st.one_of(st.none(), st.sampled_from(BREAKING)), max_size=6))
    tight = draw(st.booleans())  # max_event_bytes = the largest element: element-wise parsing
    if not tight and "oversized" in slots:
        slots = [None if slot == "oversized" else slot for slot in slots]
    if not slots:
        slots = [None]
    ensure_ascii, compact = draw(st.booleans()), draw(st.booleans())

    def encode(value: Any) -> bytes:
        separators = (",", ":") if compact else None
        text = json.dumps(value, ensure_ascii=ensure_ascii, separators=separators)
        return text.encode("utf-8", "surrogatepass")

    objects: list[Any] = []
    expected_events: list[Event] = []
    expected_errors: list[tuple[int, str]] = []
    for index, slot in enumerate(slots):
        obj, event = draw(valid_events())
        if slot is None:
            objects.append(obj)
            expected_events.append(event)
        else:
            code, breaker = BREAKERS[slot]
            objects.append(breaker(obj))
            expected_errors.append((index, code))
    if "surrogate" in slots:
        ensure_ascii = True  # a lone surrogate only reaches the decoder as a \\u escape
    encoded = [encode(obj) for obj in objects]
    for index, slot in enumerate(slots):
        if slot == "infinite":  # json.dumps writes Infinity, which is not JSON; 1e400 is
            encoded[index] = encoded[index].replace(b"Infinity", b"1e400")
    sizes = [len(item) for item, slot in zip(encoded, slots, strict=True) if slot != "oversized"]
    max_event_bytes = max(sizes, default=64) if tight else 1 << 20
    for index, slot in enumerate(slots):
        if slot == "oversized":  # more bytes than the limit; in characters maybe far fewer
            char = draw(st.sampled_from(["\U0001f600", "\u20ac", "\u00e9", "x"]))
            pad = char * (max_event_bytes // len(char.encode()) + 1)
            encoded[index] = encode({"type": "big", "pad": pad})
    gaps = st.text(st.sampled_from(" \t\r\n"), max_size=2).map(str.encode)
    body = b"[" + draw(gaps)
    for position, item in enumerate(encoded):
        if position:
            body += draw(gaps) + b"," + draw(gaps)
        body += item
    body += draw(gaps) + b"]"
    if draw(st.booleans()):
        body = b'{"sent_at": 1, "events": ' + body + b', "meta": {"events": []}}'

    generated = counter_ids()
    expected_events = [
        event if event.id else attrs.evolve(event, id=generated()) for event in expected_events
    ]
    limits = attrs.evolve(
        LIMITS,
        max_body_bytes=len(body),
        max_batch_events=len(slots),
        max_event_bytes=max_event_bytes,
    )
    return body, limits, expected_events, expected_errors


@PROPERTY
@given(mixed_batches())
def test_invalid_events_are_reported_at_their_positions(
    case: tuple[bytes, LimitsConfig, list[Event], list[tuple[int, str]]],
) -> None:
    body, limits, expected_events, expected_errors = case
    result = decode_batch(body, now=NOW, limits=limits, new_id=counter_ids())
    check_batch(result, limits)
    assert [(error.index, error.code) for error in result.errors] == expected_errors
    assert list(result.events) == expected_events
    assert result.total == len(expected_events) + len(expected_errors)


# ---------------------------------------------------------------------------------------------
# 4. Round trip: Event -> JSON -> the same Event


@composite
def events(draw: DrawFn) -> Event:
    micros = draw(st.integers(int(OLDEST * 1_000_000), int(NEWEST * 1_000_000)))
    return Event(
        id=draw(valid_ids),
        type=draw(stripped_types),
        timestamp=micros / 1_000_000,
        user_id=draw(st.one_of(st.none(), valid_subjects)),
        session_id=draw(st.one_of(st.none(), valid_subjects)),
        properties=draw(valid_properties),
        id_given=True,  # event_json sends the id
    )


@composite
def event_json(draw: DrawFn, event: Event) -> dict[str, Any]:
    """``event`` as a client may write it: any timestamp form that is exact, nulls or not."""
    obj: dict[str, Any] = {"type": event.type, "id": event.id}
    millis = round(event.timestamp * 1000)
    if millis / 1000 == event.timestamp and draw(st.booleans()):
        obj["timestamp"] = millis
    else:
        obj["timestamp"] = draw(rfc3339_texts(event.timestamp, event.timestamp))
    for name in ("user_id", "session_id", "properties"):
        value = getattr(event, name)
        if value or draw(st.booleans()):
            obj[name] = value or None
    return obj


@composite
def encoded_event_lists(draw: DrawFn) -> tuple[list[Event], list[bytes]]:
    originals = draw(st.lists(events(), min_size=1, max_size=4))
    ensure_ascii, compact = draw(st.booleans()), draw(st.booleans())
    separators = (",", ":") if compact else None
    bodies = [
        json.dumps(draw(event_json(event)), ensure_ascii=ensure_ascii, separators=separators)
        for event in originals
    ]
    return originals, [body.encode() for body in bodies]


@PROPERTY
@given(encoded_event_lists())
def test_events_round_trip_through_json(case: tuple[list[Event], list[bytes]]) -> None:
    originals, bodies = case

    def no_generation() -> str:
        raise AssertionError("every event has its id")

    for event, body in zip(originals, bodies, strict=True):
        assert decode_event(body, now=NOW, limits=ROOMY, new_id=no_generation) == event
    array = b"[" + b", ".join(bodies) + b"]"
    for limits in (ROOMY, attrs.evolve(ROOMY, max_event_bytes=max(map(len, bodies)))):
        result = decode_batch(array, now=NOW, limits=limits, new_id=no_generation)
        assert result == BatchResult(tuple(originals), (), len(originals))

"""A journal payload gives back exactly the events it was given."""

from __future__ import annotations

import math
import struct
from types import MappingProxyType
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.journal.helpers import batch
from twisted_rta.events.model import Event
from twisted_rta.journal.records import BIG_INT_EXT, decode_events, encode_events


def exact(value: Any) -> Any:
    """``value`` as a structure whose equality also compares types and float bits."""
    kind = type(value)
    if kind is float:
        return ("float", struct.pack("<d", value))
    if kind is dict:
        return ("dict", [(key, exact(item)) for key, item in value.items()])
    if kind is list:
        return ("list", [exact(item) for item in value])
    if kind is Event:
        return ("event", [exact(getattr(value, name)) for name in attrs.fields_dict(Event)])
    return (kind.__name__, value)


def assert_exact(got: tuple[Event, ...], expected: tuple[Event, ...]) -> None:
    assert got == expected
    assert [exact(item) for item in got] == [exact(item) for item in expected]


def test_realistic_batches_round_trip() -> None:
    for size in (0, 1, 100):
        events = batch(1, size)
        assert_exact(decode_events(encode_events(events)), events)


def test_none_fields_unicode_and_nested_properties_round_trip() -> None:
    events = (
        Event("e1", "page_view", 1.5),
        Event(
            "é-✓-😀",
            "ünïcödé",
            1_704_067_200.123456,
            user_id=None,
            session_id="会话",
            properties={
                "nested": {"list": [1, "two", 3.0, None, True, False, [], {}]},
                "deep": {"a": {"b": {"c": [{"d": -0.0}]}}},
                "emoji": "🚀\u0000\n\t",
                "order": {"z": 1, "a": 2, "m": 3},
            },
        ),
    )
    decoded = decode_events(encode_events(events))
    assert_exact(decoded, events)
    assert list(decoded[1].properties["order"]) == ["z", "a", "m"]


def test_integers_of_any_size_round_trip() -> None:
    huge = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400, -(10**400)]
    events = (Event("big", "t", 1.0, properties={"values": huge, "one": {"deep": 2**200}}),)
    payload = encode_events(events)
    assert_exact(decode_events(payload), events)
    raw = msgspec.msgpack.decode(payload)  # without the hook: extensions stay visible
    assert isinstance(raw[0][5]["one"]["deep"], msgspec.msgpack.Ext)
    assert raw[0][5]["values"][:3] == huge[:3]  # what MessagePack holds stays plain
    small = (Event("small", "t", 1.0, properties={"values": [2**64 - 1, -(2**63)]}),)
    assert msgspec.msgpack.decode(encode_events(small))[0][5] == {"values": [2**64 - 1, -(2**63)]}
    assert_exact(decode_events(encode_events(small)), small)


def test_timestamps_keep_every_bit() -> None:
    stamps = [0.0, 5e-324, 1_704_067_200.000001, math.nextafter(1.7e9, 2e9), 1.7976931348623157e308]
    events = tuple(Event(f"e{i}", "t", stamp) for i, stamp in enumerate(stamps))
    assert_exact(decode_events(encode_events(events)), events)


def test_a_mapping_that_is_not_a_dict_is_written_as_one() -> None:
    events = (Event("m", "t", 1.0, properties=MappingProxyType({"a": [1]})),)
    assert decode_events(encode_events(events)) == (Event("m", "t", 1.0, properties={"a": [1]}),)


def test_an_unknown_extension_is_refused() -> None:
    payload = msgspec.msgpack.encode(
        [["e", "t", 1.0, None, None, {"x": msgspec.msgpack.Ext(BIG_INT_EXT + 5, b"\x01")}]]
    )
    with pytest.raises(ValueError, match="unknown extension"):
        decode_events(payload)


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)
_EVENT = st.builds(
    Event,
    id=_TEXT,
    type=_TEXT,
    timestamp=st.floats(allow_nan=False, allow_infinity=False),
    user_id=st.none() | _TEXT,
    session_id=st.none() | _TEXT,
    properties=st.dictionaries(_TEXT, _JSON, max_size=5),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_EVENT, max_size=5))
def test_any_events_round_trip(events: list[Event]) -> None:
    assert_exact(decode_events(encode_events(events)), tuple(events))


def test_whether_the_client_gave_the_id_survives_the_journal() -> None:
    events = (
        Event("m-1", "track", 1.5, "u", None, {"a": 1}, id_given=True),
        Event("drawn", "track", 2.5),
    )
    assert_exact(decode_events(encode_events(events)), events)


def test_a_payload_written_before_id_given_reads_with_it_false() -> None:
    old = msgspec.msgpack.encode([["m-1", "track", 1.5, "u", None, {"a": 1}]])
    assert decode_events(old) == (Event("m-1", "track", 1.5, "u", None, {"a": 1}),)
    with pytest.raises(msgspec.ValidationError):
        decode_events(msgspec.msgpack.encode([["m-1", "track"]]))

"""decode_batch's msgspec fast path answers exactly as the careful (stdlib) path does.

Every body is decoded both ways, under several limits, and the results are compared by value
and by repr (so 1 vs 1.0 vs True differ), errors and messages included, along with every call
made to ``new_id``.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from attrs import frozen

from twisted_rta.config import LimitsConfig
from twisted_rta.events.decode import decode_batch, decode_batch_careful
from twisted_rta.events.fast import fast_batch
from twisted_rta.events.ids import uuid4_batch, uuid4_supply
from twisted_rta.events.model import BatchResult, BodyError, Event

NOW = 1_764_000_000.0  # 2025-11-24T16:00:00Z
NOW_MS = int(NOW * 1000)


# The daemon's own limits type: its defaults are the documented ones.
Limits = LimitsConfig


LIMITS = Limits()
TIGHT = Limits(
    max_body_bytes=4096,
    max_batch_events=6,
    max_event_bytes=160,
    max_properties=3,
    max_property_depth=2,
    max_property_key_length=8,
    max_string_length=12,
    max_future_skew=60.0,
    max_event_age=3600.0,
)


def recording_ids() -> tuple[Callable[[], str], list[str]]:
    calls: list[str] = []

    def new_id() -> str:
        calls.append(f"gen-{len(calls) + 1}")
        return calls[-1]

    return new_id, calls


def outcome(decode: Callable[..., BatchResult], body: bytes, limits: Limits) -> Any:
    new_id, calls = recording_ids()
    try:
        result = decode(body, now=NOW, limits=limits, new_id=new_id)
    except BodyError as error:
        return ("body", error.status, error.code, error.message, error.errors, calls)
    return ("batch", result, repr(result), calls)


def limit_variants(body: bytes) -> list[Limits]:
    """Defaults, tight limits, and element sizes that make the decoder measure each element."""
    return [
        LIMITS,
        TIGHT,
        attrs.evolve(LIMITS, max_event_bytes=max(1, len(body) - 1)),
        attrs.evolve(LIMITS, max_event_bytes=max(1, len(body) // 3)),
        attrs.evolve(TIGHT, max_body_bytes=1 << 20, max_event_bytes=len(body)),
    ]


def assert_same(body: bytes) -> None:
    for limits in limit_variants(body):
        fast = outcome(decode_batch, body, limits)
        careful = outcome(decode_batch_careful, body, limits)
        assert fast == careful, (body[:300], limits)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


# ---------------------------------------------------------------------------------------------
# The fast path is really taken for ordinary batches


def realistic(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.7:
            kind, properties = "pageview", {"page": f"/p/{rng.randrange(10000)}"}
        elif roll < 0.9:
            kind, properties = "click", {"element": f"btn-{rng.randrange(50)}"}
        else:
            kind, properties = "purchase", {"amount": round(rng.uniform(1, 200), 2)}
        user, session = f"user-{rng.randrange(10**6)}", f"sess-{rng.randrange(2 * 10**5)}"
        events.append(
            {"type": kind, "user_id": user, "session_id": session, "properties": properties}
        )
    return events


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("max_event_bytes", [65_536, 200])
def test_realistic_batches_take_the_fast_path(wrap: bool, max_event_bytes: int) -> None:
    elements: Any = realistic(100)
    body = encode({"events": elements} if wrap else elements)
    limits = attrs.evolve(LIMITS, max_event_bytes=max_event_bytes)
    new_id, _ = recording_ids()
    assert fast_batch(body, NOW, limits, new_id) is not None
    assert_same(body)


def test_bad_elements_are_judged_one_by_one_on_the_fast_path() -> None:
    elements: list[Any] = realistic(100)
    elements[3] = {"type": 5}
    elements[7] = {"type": "a", "unknown": [1, {"x": None}]}
    elements[9] = "not an object"
    elements[11] = {"type": "a", "properties": {"v": ["1e999"]}}
    body = encode(elements).replace(b'"1e999"', b"1e999")  # json reads inf, msgspec refuses
    new_id, _ = recording_ids()
    result = fast_batch(body, NOW, LIMITS, new_id)
    assert result is not None
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (3, "type", "invalid_type"),
        (9, "", "invalid_type"),
        (11, "properties.v[0]", "invalid_number"),
    ]
    assert_same(body)


def test_bad_purchase_amounts_are_judged_on_the_fast_path() -> None:
    elements: list[Any] = realistic(100)
    elements[5] = {"type": "purchase", "properties": {"amount": "19.5"}}
    elements[6] = {"type": "purchase", "properties": {"amount": -5}}
    elements[7] = {"type": "purchase", "properties": {"amount": True}}
    elements[8] = {"type": "purchase", "properties": {"note": "no amount"}}
    body = encode(elements)
    new_id, calls = recording_ids()
    result = fast_batch(body, NOW, LIMITS, new_id)
    assert result is not None
    assert [(e.index, e.field, e.code) for e in result.errors] == [
        (5, "properties.amount", "invalid_amount"),
        (6, "properties.amount", "invalid_amount"),
        (7, "properties.amount", "invalid_amount"),
    ]
    assert len(result.events) == len(calls) == 97
    careful = decode_batch_careful(body, now=NOW, limits=LIMITS, new_id=recording_ids()[0])
    assert careful.errors == result.errors
    assert_same(body)


def test_many_refused_elements_go_to_the_careful_path() -> None:
    elements = [{**event, "context": {"ip": "10.0.0.1"}} for event in realistic(100)]
    body = encode(elements)
    new_id, _ = recording_ids()
    assert fast_batch(body, NOW, LIMITS, new_id) is None
    assert_same(body)


def test_no_new_id_call_is_wasted_when_the_fast_path_gives_up() -> None:
    # The last element breaks a properties limit, which sends the body to the careful path.
    elements: list[Any] = [*realistic(30), {"type": "a", "properties": {"k" * 200: 1}}]
    body = encode(elements)
    new_id, calls = recording_ids()
    assert fast_batch(body, NOW, LIMITS, new_id) is None
    assert calls == []
    assert_same(body)


# ---------------------------------------------------------------------------------------------
# Each known difference between msgspec and the stdlib parser


def event_with(raw_value: str, key: str = "properties") -> bytes:
    return b'[{"type": "a"}, {"type": "b", "' + key.encode() + b'": ' + raw_value.encode() + b"}]"


TRICKY_BODIES: list[bytes] = [
    # NaN / Infinity literals, in properties, timestamps, ignored fields and between elements
    event_with('{"v": NaN}'),
    event_with('{"v": [1, -Infinity]}'),
    event_with("Infinity", "timestamp"),
    event_with("NaN", "unknown"),
    b'[{"type": "a"}, NaN]',
    b'[{"type": "NaN", "properties": {"v": "Infinity"}}]',
    # numbers beyond float range, and integers beyond int64 or beyond what Python converts
    event_with('{"v": 1e999}'),
    event_with('{"v": -1e999}'),
    event_with("1e999", "timestamp"),
    event_with("-1e400", "timestamp"),
    event_with("1" * 30, "timestamp"),
    event_with("-" + "1" * 30, "timestamp"),
    event_with(str(10**400), "timestamp"),
    event_with('{"v": ' + "9" * 30 + "}"),
    event_with('{"v": ' + "9" * 4300 + "}"),
    event_with('{"v": -' + "9" * 4300 + "}"),
    event_with('{"v": ' + "9" * 4301 + "}"),
    event_with("9" * 5000, "unknown"),
    b'{"events": [{"type": "a", "v": ' + b"9" * 5000 + b'}], "events": [{"type": "b"}]}',
    b'{"events": [{"type": "a"}], "other": ' + b"9" * 5000 + b"}",
    event_with('{"v": 1e-400, "w": -0, "x": -0.0, "y": 1E5, "z": 2.5e+3}'),
    event_with('{"v": 0.1, "w": 1.7976931348623157e308, "x": 5e-324, "y": 123456789012345678}'),
    # int vs float epoch milliseconds, and booleans are not numbers
    event_with(str(NOW_MS), "timestamp"),
    event_with(f"{NOW_MS}.0", "timestamp"),
    event_with(f"{NOW_MS / 1000}e3", "timestamp"),
    event_with(str(NOW_MS + 1), "timestamp"),
    event_with(f"{NOW_MS + 250.5}", "timestamp"),
    event_with("true", "timestamp"),
    event_with("false", "timestamp"),
    event_with("-0", "timestamp"),
    event_with('"2025-11-24T15:00:00Z"', "timestamp"),
    event_with('"2025-11-24T15:00:00.123456789+01:00"', "timestamp"),
    event_with('"2025-11-24T15:00:00"', "timestamp"),
    # duplicate keys: the last one wins in json
    b'[{"type": "a", "type": "b"}]',
    b'[{"type": "a", "type": 5}]',
    b'[{"type": 5, "type": "a"}]',
    b'[{"type": "a", "typ\\u0065": "b"}]',
    b'[{"type": "a", "id": "x", "id": null}]',
    b'[{"type": "a", "properties": {"k": 1, "j": 2, "k": 3}}]',
    b'[{"type": "a", "properties": {"k": 1}, "properties": null}]',
    b'{"events": [{"type": "a"}], "events": [{"type": "b"}, {"type": "c"}]}',
    b'{"events": [{"type": "a"}], "event\\u0073": [{"type": "b"}]}',
    b'{"events": [{"type": "a"}], "events": 5}',
    b'{"events": 5, "events": [{"type": "a"}]}',
    # invalid UTF-8, in strings and out of them
    b'[{"type": "caf\xc3\x28"}]',
    b'[{"type": "a", "properties": {"v": "\xff"}}]',
    b'[{"type": "a", "x": "\xed\xa0\x80"}]',
    b'[{"type": "a", "x": "\xc0\xaf"}]',
    b'[{"type": "a"}]\xff',
    b'[{"type": "caf\xc3\xa9", "user_id": "\xe2\x82\xac", "properties": {"\xf0\x9f\x98\x80": 1}}]',
    # lone surrogates from escapes (valid pairs are fine)
    b'[{"type": "a\\ud800"}]',
    b'[{"type": "\\udc00x"}]',
    b'[{"type": "\\ud83d\\ude00"}]',
    b'[{"type": "\\ude00\\ud83d"}]',
    b'[{"type": "\\ud83d\\u0041"}]',
    b'[{"type": "a", "properties": {"\\ud800": 1}}]',
    b'[{"type": "a", "x": "\\ud800"}]',
    b'[{"type": "a", "id": "\\udbff"}, {"type": "b", "session_id": "\\ud800\\udc00"}]',
    b'[{"type": "a", "properties": {"s": "\\\\ud800"}}]',
    # control characters and escapes in strings
    b'[{"type": "a\x01"}]',
    b'[{"type": "a\x7f"}]',
    b'[{"type": "a\\u0000b"}]',
    b'[{"type": "a\\/b\\"c\\\\d\\b\\f\\n\\r\\t"}]',
    b'[{"type": "a\\x"}]',
    # whitespace, BOM, trailing data
    b' \n\t[ {"type" :"a" } ,\r\n {"type":"b"}\t] \n',
    b'\x0c[{"type": "a"}]',
    b'[{"type": "a"}]\x0b',
    b'[{"type":\xc2\xa0"a"}]',
    b'\xef\xbb\xbf[{"type": "a"}]',
    b'[{"type": "a"}] x',
    b'[{"type": "a"}][]',
    b'{"events": [{"type": "a"}]} {}',
    # null and empty for optional fields; unknown fields are ignored
    b'[{"type": "a", "id": null, "timestamp": null, "user_id": null, "session_id": null,'
    b' "properties": null}]',
    b'[{"type": "a", "id": "", "user_id": "", "session_id": "", "properties": {}}]',
    b'[{"type": "a", "unknown": {"deep": [1, 2, {"x": null}]}, "context": "x"}]',
    b'[{"type": null}, {}, {"type": ""}, {"type": "  "}, {"type": " a "}]',
    # nesting: inside the limit, over it, and too deep for the scanner
    event_with('{"v": [[[{"a": [1]}]]]}'),
    event_with('{"v": ' + "[" * 150 + "]" * 150 + "}"),
    event_with('{"v": ' + "[" * 990 + "]" * 990 + "}"),
    event_with('{"v": ' + "[" * 5000 + "]" * 5000 + "}"),
    event_with("[" * 5000 + "]" * 5000, "unknown"),
    event_with("[" * 300 + "]" * 300, "unknown"),
    b"[" * 100_000 + b"]" * 100_000,
    # purchase amounts: a finite number >= 0, or absent
    *(
        b'[{"type": "a"}, {"type": "purchase", "properties": {"amount": ' + raw + b"}}]"
        for raw in (
            b'"19.5"',
            b"-5",
            b"-0.01",
            b"-0",
            b"-0.0",
            b"0",
            b"19.5",
            b"true",
            b"null",
            b"[]",
            b"{}",
            b"1e999",
            b"-1e999",
            b"NaN",
            b"9" * 400,
            b"-" + b"9" * 400,
            b"1.7976931348623157e308",
        )
    ),
    b'[{"type": " purchase ", "properties": {"amount": -1}}, {"type": "purchase"}]',
    b'[{"type": "purchase", "properties": {"amount": -1, "amount": 2}}]',
    b'[{"type": "purchase", "properties": {"amount": 2, "amount": "2"}}]',
    b'[{"type": "purchase", "user_id": 5, "properties": {"amount": "2"}}]',
    b'[{"type": "purchase", "extra": 1, "properties": {"amount": "2"}}, {"type": "b"}]',
    # body shapes
    b"[]",
    b" [ ] ",
    b"null",
    b"{}",
    b'{"events": []}',
    b'{"events": null}',
    b'{"events": {"type": "a"}}',
    b'{"events": [{"type": "a"}], "sent_at": 5}',
    b'{"meta": {"events": 1}, "events": [{"type": "a"}]}',
    b'"events"',
    b"5",
    b'[{"type": "a"}, 5, null, "x", [], true, {"type": "b"}]',
    b'[{"type": "a"},]',
    b'[{"type": "a"} {"type": "b"}]',
    b'[{"type": "a"}',
    encode([{"type": "a"}] * 7),
    encode([{"type": "a"}] * 1001),
]


@pytest.mark.parametrize("body", TRICKY_BODIES, ids=lambda body: repr(body[:60]))
def test_tricky_bodies(body: bytes) -> None:
    assert_same(body)


def test_field_limits_at_and_over_the_boundary() -> None:
    for value in ("x" * 128, "x" * 129, " " + "x" * 128 + " ", "\t\n"):
        assert_same(encode([{"type": value}, {"type": "a", "id": value}]))
    for value in ("x" * 256, "x" * 257):
        assert_same(encode([{"type": "a", "user_id": value}, {"type": "a", "session_id": value}]))
    for count in (3, 4, 64, 65):
        assert_same(encode([{"type": "a", "properties": {f"k{i}": i for i in range(count)}}]))
    for length in (8, 9, 128, 129, 500):
        assert_same(encode([{"type": "a", "properties": {"k" * length: 1}}]))
        assert_same(encode([{"type": "a", "properties": {"v": ["s", "x" * length * 16]}}]))
    for skew in (59, 61, 299, 300, 301):
        assert_same(encode([{"type": "a", "timestamp": (NOW + skew) * 1000}]))
    for age in (3599, 3601, 604_799, 604_800, 604_801):
        assert_same(encode([{"type": "a", "timestamp": (NOW - age) * 1000}]))


# ---------------------------------------------------------------------------------------------
# Seeded random bodies


@frozen
class Lit:
    """JSON text emitted as is (NaN, huge numbers, escapes json.dumps would not write)."""

    text: str


@frozen
class Pairs:
    """A JSON object that may repeat keys."""

    items: tuple[tuple[str, Any], ...]


SPACES = ["", "", "", " ", " ", "\n  ", "\t", "\r\n"]


def dump(value: Any, rng: random.Random) -> str:
    def space() -> str:
        return rng.choice(SPACES)

    if type(value) is Lit:
        return value.text
    if type(value) is Pairs or type(value) is dict:
        pairs = value.items if type(value) is Pairs else tuple(value.items())
        members = [f"{space()}{dump(k, rng)}{space()}:{space()}{dump(v, rng)}" for k, v in pairs]
        return "{" + ",".join(members) + space() + "}"
    if type(value) is list:
        return "[" + ",".join(space() + dump(item, rng) for item in value) + space() + "]"
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


STRINGS = [
    "",
    " ",
    "a",
    "pageview",
    "  click ",
    "x" * 13,
    "x" * 129,
    "x" * 257,
    "caf\u00e9",
    "\N{GRINNING FACE}",
    "NaN",
    "2025-11-24T15:59:00Z",
    Lit('"\\ud800"'),
    Lit('"a\\udc00b"'),
    Lit('"\\ud83d\\ude00"'),
    Lit('"\\u0041\\u00e9"'),
]
NUMBERS = [
    0,
    -1,
    7,
    2.5,
    -0.0,
    1e300,
    10**20,
    Lit("1e999"),
    Lit("-1e999"),
    Lit("NaN"),
    Lit("Infinity"),
    Lit("1E2"),
    Lit("1e-400"),
    Lit("9" * 4301),
    Lit("-" + "9" * 4300),
]
SCALARS = [None, True, False, *STRINGS, *NUMBERS]
CLEAN_SCALARS = [None, True, False, "", "a", "/p/1", "caf\u00e9", 0, -1, 7, 2.5, -0.0, 10**20]


@frozen
class Gen:
    """Random event JSON; ``wild`` is how often a value comes from the tricky pools."""

    rng: random.Random
    wild: float

    def pick(self, clean: list[Any], tricky: list[Any]) -> Any:
        return self.rng.choice(tricky if self.rng.random() < self.wild else clean)

    def value(self, depth: int) -> Any:
        roll = self.rng.random()
        if depth <= 0 or roll < 0.6:
            return self.pick(CLEAN_SCALARS, SCALARS)
        if roll < 0.8:
            return [self.value(depth - 1) for _ in range(self.rng.randrange(4))]
        return self.object(depth - 1)

    def object(self, depth: int) -> Any:
        keys = self.pick(
            ["a", "page", "k", "amount"], ["k" * 9, "k" * 40, "k" * 130, Lit('"\\ud800"')]
        )
        pairs = [
            (self.pick(["a", "page", keys], [keys]), self.value(depth))
            for _ in range(self.rng.randrange(5))
        ]
        if self.rng.random() < self.wild:
            return Pairs(tuple(pairs))
        return {str(key): value for key, value in pairs}

    def event(self) -> Any:
        rng = self.rng
        if rng.random() < self.wild / 5:
            return rng.choice([5, None, "event", [], True, Lit("NaN")])
        clean_times = [NOW_MS, NOW_MS - 5000, (NOW - 1.5) * 1000, "2025-11-24T15:59:00Z", None]
        tricky_times = [
            NOW_MS + 10**7,
            NOW_MS - 10**10,
            Lit(f"{NOW_MS}.0"),
            Lit(f"{NOW_MS / 1000}e3"),
            "2025-11-24T15:59:00.123456789+01:00",
            "2025-11-24T15:59:00",
            "0001-01-01T00:00:00Z",
            *SCALARS,
        ]
        optional = {
            "id": lambda: self.pick([None, "", "evt-1"], ["i" * 129, 7, True, *STRINGS]),
            "timestamp": lambda: self.pick(clean_times, tricky_times),
            "user_id": lambda: self.pick([None, "", "u1"], ["u" * 257, 0, False, {"id": 1}]),
            "session_id": lambda: self.pick([None, "", "s1"], STRINGS),
            "properties": lambda: (
                self.object(rng.randrange(4))
                if rng.random() < 0.9
                else self.pick([None, {}], [[], "x", 1, True])
            ),
            "unknown": lambda: self.value(3),
        }
        fields: list[tuple[str, Any]] = []
        if rng.random() > self.wild / 10:
            kinds = ["pageview", " click ", "caf\u00e9", "purchase"]
            fields.append(("type", self.pick(kinds, SCALARS)))
        for name, make in optional.items():
            if rng.random() < (self.wild / 3 if name == "unknown" else 0.5):
                fields.append((name, make()))
        rng.shuffle(fields)
        if fields and rng.random() < self.wild / 3:
            fields.append((fields[0][0], self.pick(CLEAN_SCALARS, SCALARS)))  # a repeated key
        return Pairs(tuple(fields))

    def body(self) -> bytes:
        rng = self.rng
        events = [self.event() for _ in range(rng.choice([1, 1, 2, 3, 5, 8]))]
        value: Any = events
        if rng.random() < 0.3:
            members: list[tuple[str, Any]] = [("events", events)]
            if rng.random() < self.wild:
                members.append((rng.choice(["sent_at", "events"]), rng.choice(SCALARS)))
                rng.shuffle(members)
            value = Pairs(tuple(members))
        body = bytearray(dump(value, rng).encode("utf-8", "surrogatepass"))
        if rng.random() < self.wild / 3:  # damage it
            at = rng.randrange(len(body) + 1)
            roll = rng.random()
            if roll < 0.4:
                body[at:at] = rng.choice(TOKENS)
            elif roll < 0.7 and at < len(body):
                del body[at]
            elif at < len(body):
                body[at] = rng.randrange(256)
        return bytes(body)


TOKENS = [b"NaN", b"1e999", b'"\\ud800"', b"\xff", b",", b"]", b"}", b"\xef\xbb\xbf", b"9" * 4400]


@pytest.mark.parametrize("wild", [0.05, 0.2, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_random_bodies(seed: int, wild: float) -> None:
    gen = Gen(random.Random(seed), wild)
    for _ in range(300):
        assert_same(gen.body())


# ---------------------------------------------------------------------------------------------
# Default ids


UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_bulk_ids_are_like_new_uuid4() -> None:
    ids = uuid4_batch(2000)
    assert len(ids) == 2000
    assert len(set(ids)) == 2000
    assert all(UUID4.fullmatch(value) for value in ids)
    assert all(str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4 for value in ids)
    assert {value[19] for value in ids} == set("89ab")
    assert {value[14] for value in ids} == {"4"}
    assert uuid4_batch(0) == []


def test_id_supply_keeps_going_after_its_bulk() -> None:
    supply = uuid4_supply(2)
    ids = [supply() for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(UUID4.fullmatch(value) for value in ids)


@pytest.mark.parametrize("count", [1, 15, 16, 100, 1000])
def test_default_ids_in_batches(count: int) -> None:
    elements: list[Any] = realistic(count)
    elements[0] = {**elements[0], "id": "mine"}
    body = encode(elements)
    fast = decode_batch(body, now=NOW, limits=LIMITS)
    new_id, _ = recording_ids()
    careful = decode_batch_careful(body, now=NOW, limits=LIMITS, new_id=new_id)
    assert fast.events[0].id == "mine"
    generated = [event.id for event in fast.events[1:]]
    assert len(set(generated)) == count - 1
    assert all(UUID4.fullmatch(value) for value in generated)
    as_careful = [
        attrs.evolve(a, id=b.id) for a, b in zip(fast.events, careful.events, strict=True)
    ]
    assert (as_careful, fast.errors, fast.total) == (
        list(careful.events),
        careful.errors,
        careful.total,
    )
    assert all(type(event) is Event for event in fast.events)

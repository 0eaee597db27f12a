"""Plausible's Events API body -> PlausibleHit -> Event, as its tracker script sends it."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from twisted_rta.config import LimitsConfig
from twisted_rta.events.decode import decode_event
from twisted_rta.events.model import BodyError, Event
from twisted_rta.events.plausible import (
    ERROR_CODES,
    MAX_PROPS,
    RESERVED_PROPERTIES,
    PlausibleHit,
    decode_plausible,
    to_event,
)

NOW = 1_764_000_000.0
LIMITS = LimitsConfig()
BASE = {"n": "pageview", "u": "https://example.com/", "d": "example.com"}


def body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def hit(extra: dict[str, Any] | None = None, limits: LimitsConfig = LIMITS, **base: Any) -> Any:
    return decode_plausible(body({**BASE, **base, **(extra or {})}), limits)


def error(raw: bytes, limits: LimitsConfig = LIMITS) -> BodyError:
    with pytest.raises(BodyError) as caught:
        decode_plausible(raw, limits)
    return caught.value


def event_of(decoded: PlausibleHit, site: str = "example.com") -> Event:
    return to_event(decoded, now=NOW, event_id="ev-1", user_id="visitor-1", site=site)


def assert_valid_by_our_rules(event: Event, limits: LimitsConfig = LIMITS) -> None:
    """The event, sent to our own single-event endpoint's decoder, comes back unchanged."""
    sent = {
        "type": event.type,
        "id": event.id,
        "user_id": event.user_id,
        "properties": dict(event.properties),
    }
    decoded = decode_event(body(sent), now=event.timestamp, limits=limits)
    assert decoded == attrs.evolve(event, id_given=True)  # (sent with its id)


# -- what the tracker sends ---------------------------------------------------------------------


def test_a_tracker_pageview_as_sent_in_a_text_plain_body() -> None:
    # JSON.stringify(payload) of the tracker: compact keys, its version, a null referrer.
    raw = (
        b'{"n":"pageview","v":27,"u":"https://example.com/pricing?ref=mail",'
        b'"d":"example.com","r":null,"p":{"plan":"pro"},"h":1}'
    )
    assert decode_plausible(raw, LIMITS) == PlausibleHit(
        name="pageview",
        url="https://example.com/pricing?ref=mail",
        domains=("example.com",),
        referrer=None,
        props={"plan": "pro"},
        revenue=None,
        interactive=True,
    )


def test_long_and_compact_keys_decode_alike() -> None:
    long = {
        "name": "Signup",
        "url": "https://example.com/join",
        "domain": "example.com",
        "referrer": "https://search.example/",
        "props": {"plan": "pro"},
        "revenue": {"amount": 9, "currency": "USD"},
        "interactive": False,
    }
    short = {
        "name": "n",
        "url": "u",
        "domain": "d",
        "referrer": "r",
        "props": "p",
        "revenue": "$",
        "interactive": "i",
    }
    compact = {short[key]: value for key, value in long.items()}
    expected = PlausibleHit(
        "Signup",
        "https://example.com/join",
        ("example.com",),
        "https://search.example/",
        {"plan": "pro"},
        (9.0, "USD"),
        False,
    )
    assert decode_plausible(body(long), LIMITS) == expected
    assert decode_plausible(body(compact), LIMITS) == expected


def test_the_compact_key_wins_unless_it_is_null() -> None:
    both = {"n": "short", "name": "long", "u": "https://a.example/", "d": "a.example"}
    assert decode_plausible(body(both), LIMITS).name == "short"
    assert decode_plausible(body({**both, "n": None}), LIMITS).name == "long"


def test_an_engagement_event_of_the_tracker_is_a_custom_event_named_engagement() -> None:
    raw = body(
        {"n": "engagement", "sd": 40, "d": "example.com", "u": "https://example.com/a", "e": 1200}
    )
    decoded = decode_plausible(raw, LIMITS)
    event = event_of(decoded)
    assert event.type == "engagement"
    assert "sd" not in event.properties and "page" not in event.properties


def test_a_name_may_be_an_integer_as_plausible_allows() -> None:
    assert hit(n=404).name == "404"


def test_the_name_is_trimmed_and_may_have_120_characters() -> None:
    assert hit(n="  Signup  ").name == "Signup"
    assert hit(n="x" * 120).name == "x" * 120


def test_domains_are_split_trimmed_lower_cased_and_deduplicated() -> None:
    assert hit(d=" Example.com, ,Blog.Example.com,example.com,, ").domains == (
        "example.com",
        "blog.example.com",
    )
    # A leading www. is kept as sent: matching it to a site is the caller's business.
    assert hit(d="www.example.com").domains == ("www.example.com",)


def test_a_site_longer_than_our_strings_is_too_long() -> None:
    limits = LimitsConfig(max_string_length=30)
    assert hit(limits=limits, d="a.example," + "s" * 30).domains == ("a.example", "s" * 30)
    found = error(body({**BASE, "d": "a.example," + "s" * 31}), limits)
    assert (found.status, found.code) == (400, "too_long")
    assert '"d"' in found.message and "31" in found.message


def test_referrer_blank_or_null_is_none_and_a_long_one_is_cut() -> None:
    assert hit(r=None).referrer is None
    assert hit(r="   ").referrer is None
    assert (
        hit(r="https://ref.example/" + "x" * 3000).referrer
        == ("https://ref.example/" + "x" * 3000)[:2000]
    )
    small = LimitsConfig(max_string_length=50)
    assert hit(limits=small, r="https://ref.example/" + "x" * 100).referrer == (
        "https://ref.example/" + "x" * 30
    )


def test_interactive_defaults_to_true() -> None:
    assert hit().interactive is True
    assert hit(i=None, interactive=False).interactive is False


# -- props --------------------------------------------------------------------------------------


def test_props_as_an_object_or_as_a_json_string_of_one() -> None:
    props = {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": True}
    assert hit(p=props).props == props
    assert hit(p=json.dumps(props)).props == props
    assert hit(props=props).props == props


def test_m_and_meta_are_the_old_name_of_props() -> None:
    assert hit(m=json.dumps({"plan": "pro"})).props == {"plan": "pro"}
    assert hit(meta={"plan": "free"}).props == {"plan": "free"}


def test_objects_arrays_nulls_blank_values_and_blank_keys_are_dropped_as_plausible_drops_them() -> (
    None
):
    props = {
        "kept": "yes",
        "obj": {"a": 1},
        "arr": [1],
        "nothing": None,
        "blank": "  ",
        " ": "blank key",
        "zero": 0,
        "no": False,
    }
    assert hit(p=props).props == {"kept": "yes", "zero": 0, "no": False}


def test_props_named_like_our_properties_are_dropped() -> None:
    props = {name: "from props" for name in RESERVED_PROPERTIES} | {"plan": "pro"}
    assert hit(p=props).props == {"plan": "pro"}


def test_at_most_30_props_are_kept_the_first_ones_in_the_body() -> None:
    props = {f"k{i:02}": i for i in range(40)}
    assert MAX_PROPS == 30
    assert hit(p=props).props == {f"k{i:02}": i for i in range(30)}


def test_fewer_props_are_kept_when_our_max_properties_leaves_less_room() -> None:
    props = {f"k{i}": i for i in range(10)}
    # site, url_host, page and referrer leave 2 of 6.
    limits = LimitsConfig(max_properties=6)
    decoded = hit(limits=limits, p=props, r="https://ref.example/")
    assert decoded.props == {"k0": 0, "k1": 1}
    assert_valid_by_our_rules(event_of(decoded), limits)
    # A custom event without a referrer needs only site and url_host: 4 fit.
    custom = hit(limits=limits, n="Signup", p=props)
    assert custom.props == {"k0": 0, "k1": 1, "k2": 2, "k3": 3}
    assert_valid_by_our_rules(event_of(custom), limits)


def test_props_over_the_limits_beyond_the_30_kept_are_not_judged() -> None:
    props = {f"k{i:02}": i for i in range(30)} | {"late": "x" * 5000}
    assert "late" not in hit(p=props).props


@pytest.mark.parametrize(
    ("props", "limits", "code", "named"),
    [
        ({"k" * 129: "v"}, LIMITS, "too_long", '"p"'),  # our 128 characters
        ({"k" * 301: "v"}, LimitsConfig(max_property_key_length=1000), "too_long", '"p"'),
        ({"é" * 151: "v"}, LimitsConfig(max_property_key_length=1000), "too_long", '"p"'),
        ({"plan": "x" * 2001}, LimitsConfig(max_string_length=5000), "too_long", '"p".plan'),
        ({"plan": "é" * 1001}, LIMITS, "too_long", '"p".plan'),  # 2002 bytes
        ({"plan": "x" * 101}, LimitsConfig(max_string_length=100), "too_long", '"p".plan'),
        ({"big": 10**2000}, LIMITS, "too_long", '"p".big'),
    ],
)
def test_props_too_long_for_plausible_or_for_us_are_rejected(
    props: dict[str, Any], limits: LimitsConfig, code: str, named: str
) -> None:
    raw = body({**BASE, "p": props})
    found = error(raw, limits)
    assert (found.status, found.code) == (400, code)
    assert named in found.message


def test_props_just_within_the_bounds_are_kept() -> None:
    limits = LimitsConfig(max_property_key_length=1000, max_string_length=5000)
    props = {"k" * 300: "x" * 2000, "é" * 150: "é" * 1000}
    assert hit(limits=limits, p=props).props == props


def test_a_non_finite_number_in_props_is_rejected() -> None:
    raw = body(BASE)[:-1] + b', "p": {"huge": 1e999}}'
    found = error(raw)
    assert (found.code, found.status) == ("invalid_number", 400)
    assert '"p".huge' in found.message


def test_props_of_the_wrong_kind_are_rejected_naming_the_key() -> None:
    for key, value, code in [
        ("p", [1, 2], "invalid_type"),
        ("props", 3, "invalid_type"),
        ("m", "[1, 2]", "invalid_type"),
        ("p", "{not json", "invalid_json"),
        ("meta", "NaN", "invalid_json"),
    ]:
        found = error(body({**BASE, key: value}))
        assert (found.code, found.status) == (code, 400), (key, value)
        assert f'"{key}"' in found.message


# -- revenue ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revenue", "expected"),
    [
        ({"amount": 12.5, "currency": "EUR"}, (12.5, "EUR")),
        ({"amount": "12.50", "currency": "EUR"}, (12.5, "EUR")),
        ({"amount": 7, "currency": "usd"}, (7.0, "USD")),
        ({"amount": " 1e3 ", "currency": " gbp "}, (1000.0, "GBP")),
        ({"amount": 0, "currency": "JPY"}, (0.0, "JPY")),
        ('{"amount": "19.99", "currency": "CHF"}', (19.99, "CHF")),
    ],
)
def test_revenue_forms(revenue: Any, expected: tuple[float, str]) -> None:
    assert hit({"$": revenue}).revenue == expected
    assert hit({"revenue": revenue}).revenue == expected


@pytest.mark.parametrize(
    ("revenue", "code", "named"),
    [
        ({"amount": -1, "currency": "EUR"}, "invalid_amount", '"$".amount'),
        ({"amount": "12,50", "currency": "EUR"}, "invalid_amount", '"$".amount'),
        ({"amount": "NaN", "currency": "EUR"}, "invalid_amount", '"$".amount'),
        ({"amount": "1e400", "currency": "EUR"}, "invalid_amount", '"$".amount'),
        ({"amount": True, "currency": "EUR"}, "invalid_amount", '"$".amount'),
        ({"amount": 10**400, "currency": "EUR"}, "invalid_amount", '"$".amount'),
        ({"amount": 5, "currency": "EURO"}, "invalid_currency", '"$".currency'),
        ({"amount": 5, "currency": "€"}, "invalid_currency", '"$".currency'),
        ({"amount": 5, "currency": 978}, "invalid_currency", '"$".currency'),
        ({"amount": 5}, "missing_field", '"currency"'),
        ({"currency": "EUR", "amount": None}, "missing_field", '"amount"'),
        ([5, "EUR"], "invalid_type", '"$"'),
        ("12.50 EUR", "invalid_json", '"$"'),
        ("[12.5]", "invalid_type", '"$"'),
    ],
)
def test_bad_revenue_is_rejected_naming_the_key(revenue: Any, code: str, named: str) -> None:
    found = error(body({**BASE, "$": revenue}))
    assert (found.status, found.code) == (400, code)
    assert named in found.message


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "code", "named"),
    [
        ({"u": "https://a.example/", "d": "a.example"}, "missing_field", '"name"'),
        ({**BASE, "n": None}, "missing_field", '"name"'),
        ({**BASE, "n": ["pageview"]}, "invalid_type", '"n"'),
        ({**BASE, "n": True}, "invalid_type", '"n"'),
        ({**BASE, "n": "   "}, "empty_field", '"n"'),
        ({**BASE, "n": "x" * 121}, "too_long", '"n"'),
        ({**BASE, "name": "x" * 121, "n": None}, "too_long", '"name"'),
        ({"n": "pageview", "d": "a.example"}, "missing_field", '"url"'),
        ({**BASE, "u": 5}, "invalid_type", '"u"'),
        ({**BASE, "u": "ftp://example.com/file"}, "invalid_url", '"u"'),
        ({**BASE, "u": "/relative/path"}, "invalid_url", '"u"'),
        ({**BASE, "u": "example.com/page"}, "invalid_url", '"u"'),
        ({**BASE, "u": "https:///nohost"}, "invalid_url", '"u"'),
        ({**BASE, "u": "app://localhost/login"}, "invalid_url", '"u"'),
        ({**BASE, "u": "http://[::1/"}, "invalid_url", '"u"'),
        ({**BASE, "url": "https://a.example/" + "x" * 2000, "u": None}, "too_long", '"url"'),
        ({"n": "pageview", "u": "https://a.example/"}, "missing_field", '"domain"'),
        ({**BASE, "d": ["a.example"]}, "invalid_type", '"d"'),
        ({**BASE, "domain": " , ", "d": None}, "empty_field", '"domain"'),
        ({**BASE, "r": 1}, "invalid_type", '"r"'),
        ({**BASE, "i": "false"}, "invalid_type", '"i"'),
        ({**BASE, "interactive": 0}, "invalid_type", '"interactive"'),
    ],
)
def test_every_field_error_names_the_key(sent: dict[str, Any], code: str, named: str) -> None:
    found = error(body(sent))
    assert (found.status, found.code) == (400, code)
    assert named in found.message
    assert str(found) == found.message


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty_body"),
        (b"  \n", "empty_body"),
        (b"{nope", "invalid_json"),
        (b'{"n": "pageview"} {}', "trailing_data"),
        (b'["pageview"]', "invalid_body"),
        (b'"pageview"', "invalid_body"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_body_errors(raw: bytes, code: str) -> None:
    found = error(raw)
    assert (found.status, found.code) == (400, code)


def test_a_body_nested_too_deeply_is_too_deep() -> None:
    limits = LimitsConfig(max_event_bytes=1 << 20)
    raw = body(BASE)[:-1] + b', "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert error(raw, limits).code == "too_deep"


def test_a_hit_larger_than_an_event_may_be_is_413() -> None:
    raw = body({**BASE, "p": {"pad": "x" * 2000}})
    found = error(raw, LimitsConfig(max_event_bytes=1000))
    assert (found.status, found.code) == (413, "event_too_large")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n": "pageview\\ud800", "u": "https://a.example/", "d": "a.example"}',
        b'{"n": "pageview", "u": "https://a.example/\\udc00", "d": "a.example"}',
        b'{"n": "pageview", "u": "https://a.example/", "d": "a.example\\ud800"}',
        b'{"n": "pageview", "u": "https://a.example/", "d": "a.example", "r": "\\ud800"}',
        b'{"n": "x", "u": "https://a.example/", "d": "a", "p": {"k": "\\ud800"}}',
        b'{"n": "x", "u": "https://a.example/", "d": "a", "p": {"\\ud800": "v"}}',
        b'{"n": "x", "u": "https://a.example/", "d": "a", "p": "{\\"k\\": \\"\\\\ud800\\"}"}',
    ],
)
def test_lone_surrogates_are_rejected(raw: bytes) -> None:
    found = error(raw)
    assert (found.status, found.code) == (400, "invalid_unicode")


def test_every_code_raised_is_listed_and_every_listed_code_is_raised() -> None:
    raised = set()
    cases: list[tuple[bytes, LimitsConfig]] = [
        (b"", LIMITS),
        (b"{", LIMITS),
        (b"{} {}", LIMITS),
        (b"[]", LIMITS),
        (b"[" * 200_000 + b"]" * 200_000, LimitsConfig(max_event_bytes=1 << 20)),
        (body(BASE), LimitsConfig(max_event_bytes=10)),
        (body({**BASE, "n": None}), LIMITS),
        (body({**BASE, "n": 1.5}), LIMITS),
        (body({**BASE, "n": ""}), LIMITS),
        (body({**BASE, "n": "x" * 200}), LIMITS),
        (b'{"n": "\\ud800", "u": "https://a.example/", "d": "a"}', LIMITS),
        (body(BASE)[:-1] + b', "p": {"k": -1e999}}', LIMITS),
        (body(BASE), LimitsConfig(max_properties=1)),
        (body({**BASE, "$": {"amount": -5, "currency": "EUR"}}), LIMITS),
        (body({**BASE, "u": "mailto:a@b.example"}), LIMITS),
        (body({**BASE, "$": {"amount": 5, "currency": "E"}}), LIMITS),
    ]
    for raw, limits in cases:
        raised.add(error(raw, limits).code)
    assert raised == ERROR_CODES


# -- the hit's event ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("https://example.com", "/"),
        ("https://example.com/", "/"),
        ("https://example.com?utm_source=x", "/"),
        ("https://example.com/pricing", "/pricing"),
        ("https://example.com/pricing/?plan=pro&x=1", "/pricing/"),
        ("https://example.com/docs#installation", "/docs"),
        ("https://example.com/docs?q=1#top", "/docs"),
        ("https://example.com/#/settings", "/#/settings"),
        ("https://example.com/app#/users/42?tab=a%20b", "/app#/users/42?tab=a b"),
        ("https://example.com/a%20b/caf%C3%A9", "/a b/café"),
        ("https://example.com/a+b/%2F", "/a+b//"),
        ("https://example.com/bad%zz", "/bad%zz"),
        ("https://example.com/trailing%20%20", "/trailing"),
    ],
)
def test_a_pageview_page_is_the_decoded_path_with_a_hash_route_kept(url: str, page: str) -> None:
    event = event_of(hit(u=url))
    assert event.type == "pageview"
    assert event.properties["page"] == page
    assert_valid_by_our_rules(event)


def test_a_pageview_event() -> None:
    decoded = hit(
        u="https://Blog.Example.com:8443/post?x=1",
        d="blog.example.com",
        r="https://search.example/?q=rta",
        p={"author": "ann", "words": 1200},
    )
    event = to_event(decoded, now=NOW, event_id="id-7", user_id="v-9", site="blog")
    assert event == Event(
        "id-7",
        "pageview",
        NOW,
        "v-9",
        None,
        {
            "page": "/post",
            "site": "blog",
            "url_host": "blog.example.com",
            "referrer": "https://search.example/?q=rta",
            "author": "ann",
            "words": 1200,
        },
    )
    assert_valid_by_our_rules(event)


def test_a_custom_event_keeps_its_name_as_the_type_and_has_no_page() -> None:
    event = event_of(hit(n="Outbound Link: Click", u="https://example.com/a", p={"url": "x"}))
    assert event.type == "Outbound Link: Click"
    assert event.properties == {"site": "example.com", "url_host": "example.com", "url": "x"}
    assert event.user_id == "visitor-1" and event.timestamp == NOW and event.id == "ev-1"
    assert_valid_by_our_rules(event)


def test_revenue_becomes_amount_and_currency_and_a_purchase_is_valid() -> None:
    event = event_of(hit(n="purchase", **{"$": {"amount": "49.90", "currency": "eur"}}))
    assert event.type == "purchase"
    assert event.properties["amount"] == 49.9 and type(event.properties["amount"]) is float
    assert event.properties["currency"] == "EUR"
    assert_valid_by_our_rules(event)


def test_our_properties_win_over_props_of_the_same_name() -> None:
    # A hit made by hand (decode_plausible already drops them): to_event still keeps ours.
    made = PlausibleHit(
        "pageview",
        "https://example.com/real",
        ("example.com",),
        "https://ref.example/",
        {
            "page": "/fake",
            "site": "fake",
            "url_host": "fake",
            "referrer": "fake",
            "amount": "fake",
            "currency": "fake",
            "plan": "pro",
        },
        (1.5, "EUR"),
    )
    properties = event_of(made).properties
    assert properties == {
        "page": "/real",
        "site": "example.com",
        "url_host": "example.com",
        "referrer": "https://ref.example/",
        "plan": "pro",
        "amount": 1.5,
        "currency": "EUR",
    }
    # Without a revenue or referrer of ours, props still cannot supply those names.
    bare = PlausibleHit("x", "https://example.com/", ("example.com",), props={"amount": "12"})
    assert "amount" not in event_of(bare).properties


def test_the_fullest_hit_is_valid_by_our_rules() -> None:
    # Plausible's maxima make a body over our default 64 KiB per event: allow 128 KiB.
    limits = LimitsConfig(max_event_bytes=1 << 17)
    props = {f"{'k' * 120}{i:03}": "é" * 1000 for i in range(MAX_PROPS)}
    decoded = hit(
        limits=limits,
        n="purchase",
        u="https://example.com/" + "p" * 1900,
        r="https://ref.example/" + "r" * 3000,
        p=props,
        **{"$": {"amount": 10**300, "currency": "EUR"}},
    )
    assert len(decoded.props) == MAX_PROPS
    assert_valid_by_our_rules(event_of(decoded), limits)


# -- our limits on the properties a hit adds itself ---------------------------------------------


def test_too_few_properties_allowed_for_ours_is_too_many_properties() -> None:
    found = error(body(BASE), LimitsConfig(max_properties=2))  # site, url_host, page
    assert (found.status, found.code) == (400, "too_many_properties")
    assert "at most 2" in found.message
    custom = hit(n="Signup", limits=LimitsConfig(max_properties=2), p={"plan": "pro"})
    assert custom.props == {}
    assert_valid_by_our_rules(event_of(custom), LimitsConfig(max_properties=2))


def test_a_page_or_host_longer_than_our_strings_is_too_long_naming_the_url() -> None:
    limits = LimitsConfig(max_string_length=20)
    found = error(body({**BASE, "u": "https://example.com/" + "a" * 30}), limits)
    assert (found.code, found.status) == ("too_long", 400)
    assert '"u"' in found.message and "page" in found.message
    found = error(body({"n": "x", "d": "a", "url": "https://" + "h" * 30 + ".example/"}), limits)
    assert '"url"' in found.message and "url_host" in found.message
    ok = event_of(hit(u="https://example.com/" + "a" * 10, limits=limits), site="s")
    assert_valid_by_our_rules(ok, limits)


def test_a_key_of_ours_longer_than_our_keys_is_too_long() -> None:
    found = error(body(BASE), LimitsConfig(max_property_key_length=5))
    assert (found.code, found.status) == ("too_long", 400)
    assert "url_host" in found.message

"""Plausible Analytics' Events API (``POST /api/event``): the body its tracker script sends,
decoded into a ``PlausibleHit``, and the ``Event`` a hit becomes. No HTTP here.

The body is one JSON object whatever the Content-Type (the tracker posts ``text/plain``), with
long or compact keys: name/n, url/u, domain/d, referrer/r, props/p (also m/meta, their old
name), revenue/$, interactive/i. When both forms of a key are sent, the compact one is used
unless it is null. Other keys the tracker sends (``v`` its version, ``h`` hash routing, ``sd``
and ``e`` of its ``engagement`` events) are ignored.

What follows Plausible's own ingestion, and where we differ:

- ``name`` is required, a string (or an integer, taken as its digits, as Plausible allows),
  trimmed, 1-120 characters (Plausible's bound on goal names, within our type rules).
- ``url`` is required: an absolute http(s) URL with a host, at most 2000 bytes (Plausible's
  bound). Plausible accepts other schemes too (``app://`` for mobile apps); we do not.
- ``domain`` is required (Plausible falls back to the URL's host): one site or several,
  comma-separated; each is trimmed and lower-cased, empty ones and repeats are dropped, and
  each may have at most ``limits.max_string_length`` characters (it becomes the ``site``
  property). A leading ``www.`` is kept (Plausible strips it from both sides of its site
  lookup).
- ``referrer`` is kept when it is not blank, cut to 2000 characters as Plausible cuts it (and
  to ``limits.max_string_length`` when that is shorter).
- ``props`` is an object, or a JSON string of one (older trackers). As in Plausible, members
  whose value is an object, an array, null or a blank string are dropped, and so are members
  with a blank key; at most 30 are kept (the first ones in the body; the rest are dropped as
  Plausible drops them), fewer when our ``limits.max_properties`` leaves less room next to the
  properties every hit carries. Values keep their JSON type (Plausible turns them into text).
  A kept key may have at most 300 bytes and ``limits.max_property_key_length`` characters, a
  kept value at most 2000 bytes and ``limits.max_string_length`` characters, numbers must be
  finite: breaking one is an error, as it is in Plausible. Members named like one of our
  ``RESERVED_PROPERTIES`` are always dropped: our value wins, and ``amount`` can then never
  come from props (on a ``purchase`` it feeds the revenue counter).
- ``revenue`` is ``{"amount": 12.5 or "12.50", "currency": "EUR"}`` or a JSON string of it;
  the amount must be finite and >= 0 (our rule for purchase amounts), the currency three
  letters (upper-cased). Plausible ignores a revenue it cannot read; we reject it.
- ``interactive`` is a boolean, true when absent.

A key of the wrong type is an error (Plausible ignores some of them): every error is a
``BodyError`` whose message names the key as the client sent it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from attrs import Factory, frozen

from twisted_rta.events.framing import frame_event
from twisted_rta.events.ids import new_uuid4
from twisted_rta.events.model import BodyError, Event, EventLimits
from twisted_rta.events.rules import (
    MAX_TYPE_LENGTH,
    Rules,
    amount_problem,
    describe,
    limits_breach,
    quote,
)

PropValue = str | int | float | bool

PAGEVIEW = "pageview"
MAX_NAME_LENGTH = min(120, MAX_TYPE_LENGTH)  # Plausible's goal names, within our type rule
MAX_URL_BYTES = 2000  # Plausible's bound on url (bytes) and referrer (characters)
MAX_PROPS = 30
MAX_PROP_KEY_BYTES = 300
MAX_PROP_VALUE_BYTES = 2000

# The properties a hit's event gets from us; props of the same name are dropped.
RESERVED_PROPERTIES = frozenset({"page", "site", "url_host", "referrer", "amount", "currency"})

# Every code decode_plausible raises (400 unless said): the JSON framing's body codes, then ours.
ERROR_CODES = frozenset(
    {
        "empty_body",
        "invalid_json",
        "trailing_data",
        "invalid_body",
        "too_deep",
        "event_too_large",  # 413: over limits.max_event_bytes
        "missing_field",
        "invalid_type",
        "empty_field",
        "too_long",
        "invalid_unicode",
        "invalid_number",
        "too_many_properties",
        "invalid_amount",
        "invalid_url",
        "invalid_currency",
    }
)

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_CURRENCY = re.compile(r"[A-Za-z]{3}", re.ASCII)
_SHOWN_KEY_LENGTH = 40


@frozen
class PlausibleHit:
    """One decoded Plausible event. ``domains`` are the sites it names, in order, without
    repeats; ``revenue`` is (amount, upper-case ISO 4217 currency)."""

    name: str
    url: str
    domains: tuple[str, ...]
    referrer: str | None = None
    props: Mapping[str, PropValue] = Factory(dict)
    revenue: tuple[float, str] | None = None
    interactive: bool = True


def decode_plausible(body: bytes, limits: EventLimits) -> PlausibleHit:
    """The hit in a Plausible Events API body; every problem raises ``BodyError`` (400, or
    413 ``event_too_large`` over ``limits.max_event_bytes``: a hit is one event)."""
    obj, _ = frame_event(body, limits.max_event_bytes)
    name = _name(obj)
    url_key, url, parts = _url(obj)
    domains = _domains(obj, limits)
    referrer = _referrer(obj, limits)
    revenue = _revenue(obj)
    interactive = _interactive(obj)
    ours = 2 + (name == PAGEVIEW) + (referrer is not None) + 2 * (revenue is not None)
    props = _props(obj, limits, min(MAX_PROPS, limits.max_properties - ours))
    hit = PlausibleHit(name, url, domains, referrer, props, revenue, interactive)
    _check_derived(hit, parts, url_key, limits)
    return hit


def to_event(
    hit: PlausibleHit, *, now: float, event_id: str, user_id: str | None, site: str
) -> Event:
    """The event of a decoded hit, at ``now``, for ``site``: one of ``hit.domains`` (or
    any string of at most ``limits.max_string_length`` characters, like every property).

    ``pageview`` stays ``pageview`` with ``page``: the URL's path, percent-decoded and without
    trailing whitespace as Plausible reports it, "/" when empty, never the query. The fragment
    is added only when it starts with "/" (``/#/settings``): that is how hash-based routing
    reports pages; other fragments are anchors and dropped. Other names become the type as
    they are. Every event gets ``site`` and ``url_host`` (lower case), ``referrer`` when
    given, the props, and ``amount`` and ``currency`` for a revenue; props never override
    those (``RESERVED_PROPERTIES``).
    """
    return Event(
        event_id,
        hit.name,
        now,
        user_id,
        None,
        _properties(hit, urlsplit(hit.url), site),
    )


def _properties(hit: PlausibleHit, parts: SplitResult, site: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if hit.name == PAGEVIEW:
        properties["page"] = _page(parts)
    properties["site"] = site
    properties["url_host"] = parts.hostname or ""
    if hit.referrer:
        properties["referrer"] = hit.referrer
    for key, value in hit.props.items():
        if key not in RESERVED_PROPERTIES:
            properties[key] = value
    if hit.revenue is not None:
        properties["amount"], properties["currency"] = hit.revenue
    return properties


def _page(parts: SplitResult) -> str:
    page = unquote(parts.path).rstrip() or "/"
    if parts.fragment.startswith("/"):
        page += "#" + unquote(parts.fragment)
    return page


# ---------------------------------------------------------------------------------------------
# The keys


def _first(obj: dict[str, Any], *keys: str) -> tuple[str, Any]:
    """(key, value) of the first key present and not null, or (first key, None)."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            return key, value
    return keys[0], None


def _name(obj: dict[str, Any]) -> str:
    key, value = _first(obj, "n", "name")
    if value is None:
        raise BodyError(
            400,
            "missing_field",
            f'"name" (or "n") is required: the event name, "{PAGEVIEW}" or a custom one',
        )
    if type(value) is int:
        value = str(value)
    name = _text(key, value, "a string (the event name)").strip()
    if not name:
        raise BodyError(400, "empty_field", f'"{key}" must not be empty or blank')
    if len(name) > MAX_NAME_LENGTH:
        raise BodyError(
            400,
            "too_long",
            f'"{key}" may be at most {MAX_NAME_LENGTH} characters; got {len(name)}',
        )
    return name


def _url(obj: dict[str, Any]) -> tuple[str, str, SplitResult]:
    key, value = _first(obj, "u", "url")
    if value is None:
        raise BodyError(
            400, "missing_field", '"url" (or "u") is required: the absolute URL of the page'
        )
    value = _text(key, value, "a string (a URL)")
    size = len(value.encode("utf-8"))
    if size > MAX_URL_BYTES:
        raise BodyError(
            400, "too_long", f'"{key}" may be at most {MAX_URL_BYTES} bytes; got {size} bytes'
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise BodyError(400, "invalid_url", _not_a_url(key, value)) from None
    if parts.scheme not in ("http", "https") or not host:  # urlsplit lower-cases the scheme
        raise BodyError(400, "invalid_url", _not_a_url(key, value))
    return key, value, parts


def _not_a_url(key: str, value: str) -> str:
    return f'"{key}" must be an absolute http(s) URL with a host; got {quote(value)}'


def _text(key: str, value: Any, expected: str) -> str:
    """``value`` when it is a string of valid Unicode, else the 400 naming ``key``."""
    if type(value) is not str:
        raise BodyError(400, "invalid_type", f'"{key}" must be {expected}; got {describe(value)}')
    _check_unicode(f'"{key}"', value)
    return value


def _domains(obj: dict[str, Any], limits: EventLimits) -> tuple[str, ...]:
    key, value = _first(obj, "d", "domain")
    if value is None:
        raise BodyError(
            400,
            "missing_field",
            '"domain" (or "d") is required: the site, or several separated by commas',
        )
    value = _text(key, value, "a string (sites separated by commas)")
    domains: dict[str, None] = {}
    for part in value.split(","):
        domain = part.strip().lower()
        if domain:
            domains[domain] = None
    if not domains:
        raise BodyError(
            400, "empty_field", f'"{key}" must name at least one site; got {quote(value)}'
        )
    longest = max(domains, key=len)
    if len(longest) > limits.max_string_length:  # a site becomes the property ``site``
        raise BodyError(
            400,
            "too_long",
            f'each site in "{key}" may be at most {limits.max_string_length} characters; '
            f"got one of {len(longest)}",
        )
    return tuple(domains)


def _referrer(obj: dict[str, Any], limits: EventLimits) -> str | None:
    key, value = _first(obj, "r", "referrer")
    if value is None:
        return None
    value = _text(key, value, "a string (the referring URL) or null")
    if not value.strip():
        return None
    return value[: min(MAX_URL_BYTES, limits.max_string_length)]


def _interactive(obj: dict[str, Any]) -> bool:
    key, value = _first(obj, "i", "interactive")
    if value is None:
        return True
    if type(value) is not bool:
        raise BodyError(
            400, "invalid_type", f'"{key}" must be true or false; got {describe(value)}'
        )
    return value


def _object(key: str, value: Any, expected: str) -> dict[str, Any]:
    """An object member, sent as an object or as a JSON string of one (older trackers)."""
    if type(value) is str:
        value = _json_string(key, value)
    if type(value) is not dict:
        raise BodyError(
            400,
            "invalid_type",
            f'"{key}" must be {expected} or a JSON string of one; got {describe(value)}',
        )
    return value


def _revenue(obj: dict[str, Any]) -> tuple[float, str] | None:
    key, value = _first(obj, "$", "revenue")
    if value is None:
        return None
    value = _object(key, value, 'an object {"amount": ..., "currency": ...}')
    for member in ("amount", "currency"):
        if value.get(member) is None:
            raise BodyError(
                400,
                "missing_field",
                f'"{key}" must have an "amount" and a "currency"; "{member}" is missing or null',
            )
    return _amount(key, value["amount"]), _currency(key, value["currency"])


def _amount(key: str, value: Any) -> float:
    if type(value) is str:
        text = value.strip()
        if not _DECIMAL.fullmatch(text):
            raise BodyError(
                400,
                "invalid_amount",
                f'"{key}".amount must be a number or a decimal string such as "12.50"; '
                f"got {quote(value)}",
            )
        value = float(text)
    problem = amount_problem(value)
    if problem is not None:
        raise BodyError(
            400, "invalid_amount", f'"{key}".amount must be a finite number >= 0; {problem}'
        )
    return float(value)


def _currency(key: str, value: Any) -> str:
    if type(value) is not str or not _CURRENCY.fullmatch(value.strip()):
        got = quote(value) if type(value) is str else describe(value)
        raise BodyError(
            400,
            "invalid_currency",
            f'"{key}".currency must be a three-letter ISO 4217 code such as "EUR"; got {got}',
        )
    return value.strip().upper()


def _props(obj: dict[str, Any], limits: EventLimits, room: int) -> dict[str, PropValue]:
    """The props to keep: at most ``room`` of them (see the module's notes)."""
    key, value = _first(obj, "p", "props", "m", "meta")
    if value is None:
        return {}
    value = _object(key, value, "an object")
    max_key = limits.max_property_key_length
    max_string = limits.max_string_length
    kept: dict[str, PropValue] = {}
    for name, item in value.items():
        if len(kept) >= room:
            break
        kind = type(item)
        if (
            not name.strip()
            or name in RESERVED_PROPERTIES
            or not (kind is str or kind is int or kind is float or kind is bool)
            or (kind is str and not item.strip())
        ):
            continue
        where = f'"{key}".{_short(name)}'
        _check_unicode(f'a key in "{key}"', name)
        if len(name) > max_key or len(name.encode("utf-8")) > MAX_PROP_KEY_BYTES:
            raise BodyError(
                400,
                "too_long",
                f'keys in "{key}" may be at most {max_key} characters and '
                f"{MAX_PROP_KEY_BYTES} bytes; got one of {len(name)} characters",
            )
        if kind is str:
            _check_unicode(where, item)
            if len(item) > max_string or len(item.encode("utf-8")) > MAX_PROP_VALUE_BYTES:
                raise BodyError(
                    400,
                    "too_long",
                    f'values in "{key}" may be at most {max_string} characters and '
                    f"{MAX_PROP_VALUE_BYTES} bytes; {where} has {len(item)} characters",
                )
        elif kind is float and not math.isfinite(item):
            raise BodyError(
                400, "invalid_number", f"{where} must be a finite number; it is too large"
            )
        elif kind is int and len(str(item)) > MAX_PROP_VALUE_BYTES:
            raise BodyError(
                400,
                "too_long",
                f'values in "{key}" may be at most {MAX_PROP_VALUE_BYTES} bytes; '
                f"{where} is a number of {len(str(item))} digits",
            )
        kept[name] = item
    return kept


def _check_derived(
    hit: PlausibleHit, parts: SplitResult, url_key: str, limits: EventLimits
) -> None:
    """Our limits on the properties a hit adds itself (page, url_host...): they only bite
    when the configured limits are tiny, but the event must be valid by our rules."""
    properties = _properties(hit, parts, "")  # the site is the caller's, and valid
    found = limits_breach(properties, 0, Rules.build(0.0, limits, new_uuid4))
    if found is None:
        return
    code, culprit, path = found
    if code == "too_many_properties":
        raise BodyError(
            400,
            "too_many_properties",
            f"this hit needs {len(culprit)} properties ({', '.join(culprit)}) but this server "
            f"keeps at most {limits.max_properties}",
        )
    if code == "key_too_long":
        raise BodyError(
            400,
            "too_long",
            f'this hit needs the property "{culprit}" but this server allows property keys '
            f"of at most {limits.max_property_key_length} characters",
        )
    name = path[0]
    source = url_key if name in ("page", "url_host") else "$" if name == "currency" else name
    raise BodyError(
        400,
        "too_long",
        f'"{source}" gives the property {name} {describe(culprit)}, over the '
        f"{limits.max_string_length} characters this server allows",
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _json_string(key: str, text: str) -> Any:
    """The JSON value held in a string (props and revenue as older trackers send them)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BodyError(
            400, "invalid_json", f'"{key}" is a string that does not hold valid JSON: {exc}'
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _check_unicode(where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(
            400,
            "invalid_unicode",
            f"{where} contains an unpaired UTF-16 surrogate escape; strings must be valid Unicode",
        ) from None


def _short(key: str) -> str:
    return key if len(key) <= _SHOWN_KEY_LENGTH else key[:_SHOWN_KEY_LENGTH] + "..."

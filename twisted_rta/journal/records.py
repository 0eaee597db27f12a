"""One journal payload: a batch of ``Event``s as MessagePack, and back, exactly.

A payload is a MessagePack array with one array per event, in field order: ``[id, type,
timestamp, user_id, session_id, properties, id_given]`` (journals written before
``id_given`` existed have six fields per event: they decode with ``id_given`` false).
Positional rows keep payloads small and encoding cheap (no field names; about 0.15 us per
small event in batches, on the ingest hot path). ``timestamp`` is a float64, so it comes
back bit for bit; ``properties`` is any JSON value tree (objects keep their key order).

MessagePack integers stop at 64 bits while JSON's do not (the careful decoder accepts any
integer Python's ``json`` reads). Only when the plain encoding overflows, the properties are
copied with every such integer as an extension value (code ``BIG_INT_EXT``: the integer's
two's-complement bytes, big endian), which decoding turns back into the same ``int``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from twisted_rta.events.model import Event

BIG_INT_EXT = 1

_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1

_Row = tuple[str, str, float, str | None, str | None, dict[str, Any], bool]
_RowWithoutIdGiven = tuple[str, str, float, str | None, str | None, dict[str, Any]]


def _encode_other(value: Any) -> Any:
    """Types MessagePack lacks: a non-dict mapping is written as a map."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a journal payload cannot hold {type(value).__name__} values")


def _decode_ext(code: int, data: memoryview) -> Any:
    if code == BIG_INT_EXT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown extension code {code} in a journal payload")


# Encoders and decoders are immutable once built and safe to share.
_ENCODER = msgspec.msgpack.Encoder(enc_hook=_encode_other)
_DECODER = msgspec.msgpack.Decoder(list[_Row], ext_hook=_decode_ext)
_DECODER_WITHOUT_ID_GIVEN = msgspec.msgpack.Decoder(list[_RowWithoutIdGiven], ext_hook=_decode_ext)


def encode_events(events: Sequence[Event]) -> bytes:
    """The payload holding ``events``, in order."""
    rows = [
        (e.id, e.type, e.timestamp, e.user_id, e.session_id, e.properties, e.id_given)
        for e in events
    ]
    try:
        return _ENCODER.encode(rows)
    except OverflowError:  # an integer beyond 64 bits somewhere in properties
        wide = [(*row[:5], _widen(row[5]), row[6]) for row in rows]
        return _ENCODER.encode(wide)


def decode_events(payload: bytes | memoryview) -> tuple[Event, ...]:
    """The events ``encode_events`` wrote into ``payload`` (or an older version of it)."""
    try:
        rows = _DECODER.decode(payload)
    except msgspec.ValidationError:
        old = _DECODER_WITHOUT_ID_GIVEN.decode(payload)  # raises on a damaged payload
        return tuple(Event(*row) for row in old)
    return tuple(Event(*row) for row in rows)


def _widen(value: Any) -> Any:
    """``value`` with every integer MessagePack cannot hold as a ``BIG_INT_EXT`` value."""
    kind = type(value)
    if kind is int:
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        length = (value.bit_length() + 8) // 8  # room for the sign bit
        return msgspec.msgpack.Ext(BIG_INT_EXT, value.to_bytes(length, "big", signed=True))
    if kind is list or kind is tuple:
        return [_widen(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _widen(item) for key, item in value.items()}
    return value

"""Checkpoint encoding: msgpack (msgspec) in a versioned, checksummed frame. The same bytes
are what a node publishes for the other nodes' queries.

A frame is ``magic (8 bytes) | version (u16) | crc32 (u32) | payload length (u64) | payload``,
little-endian; the CRC-32 covers the version, the length and the payload. Decoding checks
all of it, then the payload's types, so damage of any kind (a flipped bit, a truncated or
overlong file, another version, another kind of frame) raises, never decodes as data.

Version 2 added the node's recent event ids (ingest/dedup.py) after the other fields; a
version 1 checkpoint reads as one without them. A publication never carries them: they
are this node's alone, and can be megabytes.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgspec
from attrs import frozen

CHECKPOINT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_CHECKPOINT_MAGIC = b"RTA-CKPT"
_HEAD = struct.Struct("<8sHIQ")  # magic, version, crc32, payload length
_CHECKED = struct.Struct("<HQ")  # the header fields the checksum covers


class CorruptCheckpoint(ValueError):
    """The data is not an intact checkpoint of a version this code reads."""


@frozen
class Checkpoint:
    """One node's aggregator and unstored closed windows at one journal position."""

    mark: int  # checkpoint sequence number (1, 2, 3...), also the store's flush mark
    covers_seq: int  # every journal record with seq <= covers_seq is in this state ...
    applied_beyond: tuple[int, ...]  # ... plus these above it (applied out of order)
    node_id: str
    taken_at: float
    aggregator: dict[str, Any]  # export_aggregator(...)
    pending: tuple[tuple[int, Any], ...]  # (tag, export_closed([window])[0]), not yet stored
    # RecentIds.export() (ingest/dedup.py): (slice start, digests); () in a publication
    recent_ids: tuple[tuple[float, bytes], ...] = ()


class _CheckpointWire(msgspec.Struct, array_like=True, frozen=True):
    mark: int
    covers_seq: int
    applied_beyond: tuple[int, ...]
    node_id: str
    taken_at: float
    aggregator: dict[str, Any]
    pending: tuple[tuple[int, Any], ...]
    recent_ids: tuple[tuple[float, bytes], ...] = ()  # absent in version 1


_encoder = msgspec.msgpack.Encoder()
_checkpoint_decoder = msgspec.msgpack.Decoder(_CheckpointWire)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return encode_checkpoint_and_publication(checkpoint)[0]


def encode_checkpoint_and_publication(checkpoint: Checkpoint) -> tuple[bytes, bytes]:
    """The checkpoint's bytes, and the same checkpoint without its recent ids (what the
    node publishes); the aggregator, the bulk of both, is encoded once."""
    aggregator = msgspec.Raw(_encoder.encode(checkpoint.aggregator))
    frames = []
    for recent in (checkpoint.recent_ids, ()) if checkpoint.recent_ids else ((),):
        wire = _CheckpointWire(
            checkpoint.mark,
            checkpoint.covers_seq,
            tuple(checkpoint.applied_beyond),
            checkpoint.node_id,
            checkpoint.taken_at,
            aggregator,  # type: ignore[arg-type]  # encodes as the dict it was made of
            tuple(checkpoint.pending),
            tuple(recent),
        )
        frames.append(_frame(_CHECKPOINT_MAGIC, CHECKPOINT_VERSION, _encoder.encode(wire)))
    return frames[0], frames[-1]


def decode_checkpoint(data: bytes) -> Checkpoint:
    """The checkpoint in ``data``; raises CorruptCheckpoint on any damage."""
    payload = _unframe(data, _CHECKPOINT_MAGIC, _READABLE_VERSIONS, CorruptCheckpoint)
    try:
        wire = _checkpoint_decoder.decode(payload)
    except msgspec.DecodeError as e:  # ValidationError included
        raise CorruptCheckpoint(f"checkpoint payload does not decode: {e}") from e
    return Checkpoint(
        mark=wire.mark,
        covers_seq=wire.covers_seq,
        applied_beyond=wire.applied_beyond,
        node_id=wire.node_id,
        taken_at=wire.taken_at,
        aggregator=wire.aggregator,
        pending=wire.pending,
        recent_ids=wire.recent_ids,
    )


def _frame(magic: bytes, version: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_CHECKED.pack(version, len(payload))))
    return _HEAD.pack(magic, version, crc, len(payload)) + payload


def _unframe(
    data: bytes, magic: bytes, versions: tuple[int, ...], error: type[ValueError]
) -> memoryview:
    what = error.__name__.removeprefix("Corrupt").lower()
    if len(data) < _HEAD.size:
        raise error(f"{what} truncated: {len(data)} bytes, not even a header")
    found_magic, found_version, crc, length = _HEAD.unpack_from(data)
    if found_magic != magic:
        raise error(f"not a {what}: magic {found_magic!r}")
    payload = memoryview(data)[_HEAD.size :]
    if len(payload) != length:
        raise error(f"{what} truncated or overlong: {len(payload)} payload bytes, not {length}")
    if zlib.crc32(payload, zlib.crc32(_CHECKED.pack(found_version, length))) != crc:
        raise error(f"{what} checksum mismatch")
    if found_version not in versions:
        readable = ", ".join(map(str, versions))
        raise error(f"{what} version {found_version}, this code reads {readable}")
    return payload

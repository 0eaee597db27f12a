"""The checkpoint frame: round trips, and every kind of damage refused."""

from __future__ import annotations

import struct
import zlib

import msgspec
import pytest
from attrs import evolve

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.state import (
    export_aggregator,
    export_closed,
    restore_aggregator,
    restore_closed,
)
from twisted_rta.checkpoint.codec import (
    _CHECKPOINT_MAGIC,
    CHECKPOINT_VERSION,
    Checkpoint,
    CorruptCheckpoint,
    _frame,
    decode_checkpoint,
    encode_checkpoint,
    encode_checkpoint_and_publication,
)
from twisted_rta.events.model import Event
from twisted_rta.ingest.dedup import RecentIds, id_digest


def busy_aggregator() -> Aggregator:
    agg = Aggregator(window_sizes=(60.0, 3600.0), grace=5.0, max_dimension_values=2, started_at=T0)
    agg.add_many(
        [event("pageview", T0 + i, f"u{i}", "s", {"page": f"/{i % 4}"}) for i in range(30)]
        + [event("purchase", T0 + 3, "u1", None, {"amount": 9.5})],
        T0 + 30,
    )
    return agg


def checkpoint(agg: Aggregator | None = None) -> Checkpoint:
    agg = agg or busy_aggregator()
    closed = agg.close_due(T0 + 70)
    return Checkpoint(
        mark=3,
        covers_seq=41,
        applied_beyond=(43, 45),
        node_id="node-a",
        taken_at=T0 + 70.5,
        aggregator=export_aggregator(agg),
        pending=tuple((2, state) for state in export_closed(closed)),
    )


def test_checkpoint_round_trip() -> None:
    original = checkpoint()
    back = decode_checkpoint(encode_checkpoint(original))
    assert (back.mark, back.covers_seq, back.applied_beyond, back.node_id, back.taken_at) == (
        3,
        41,
        (43, 45),
        "node-a",
        T0 + 70.5,
    )
    assert [tag for tag, _ in back.pending] == [2]
    assert isinstance(back.pending, tuple) and isinstance(back.pending[0], tuple)
    # the decoded states restore (msgpack gives lists where the export had tuples)
    [window] = restore_closed([state for _, state in back.pending])
    [expected] = restore_closed([state for _, state in original.pending])
    assert window.snapshot() == expected.snapshot()
    fresh = Aggregator(
        window_sizes=(60.0, 3600.0), grace=5.0, max_dimension_values=2, started_at=0.0
    )
    restore_aggregator(fresh, back.aggregator)
    assert fresh.stats(T0) == busy_aggregator_after_close().stats(T0)


def busy_aggregator_after_close() -> Aggregator:
    agg = busy_aggregator()
    agg.close_due(T0 + 70)
    return agg


def test_empty_checkpoint_round_trips() -> None:
    agg = Aggregator(window_sizes=(60.0,), grace=0.0, max_dimension_values=1, started_at=0.0)
    original = Checkpoint(1, 0, (), "n", 0.0, export_aggregator(agg), ())
    assert decode_checkpoint(encode_checkpoint(original)) == original


def test_every_flipped_byte_is_detected() -> None:
    data = encode_checkpoint(checkpoint())
    step = max(1, len(data) // 400)
    for i in [*range(0, 40), *range(40, len(data), step), len(data) - 1]:
        damaged = bytearray(data)
        damaged[i] ^= 0x10
        with pytest.raises(CorruptCheckpoint):
            decode_checkpoint(bytes(damaged))


@pytest.mark.parametrize("keep", [0, 5, 21, 22, 100, -1])
def test_truncation_is_detected(keep: int) -> None:
    data = encode_checkpoint(checkpoint())
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        decode_checkpoint(data[:keep])


def test_trailing_bytes_are_detected() -> None:
    with pytest.raises(CorruptCheckpoint, match="overlong"):
        decode_checkpoint(encode_checkpoint(checkpoint()) + b"\0")


def test_another_version_is_refused() -> None:
    future = CHECKPOINT_VERSION + 1
    data = bytearray(encode_checkpoint(checkpoint()))
    struct.pack_into("<H", data, 8, future)
    with pytest.raises(CorruptCheckpoint):  # the checksum covers the version
        decode_checkpoint(bytes(data))
    # a well-formed frame of a future version names it
    payload = bytes(data[22:])
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<HQ", future, len(payload))))
    struct.pack_into("<I", data, 10, crc)
    with pytest.raises(CorruptCheckpoint, match=f"version {future}"):
        decode_checkpoint(bytes(data))


def test_recent_ids_round_trip_and_stay_out_of_the_publication() -> None:
    recent = RecentIds(3600.0, 100)
    recent.remember([id_digest("m1"), id_digest("m2")], T0)
    original = evolve(checkpoint(), recent_ids=recent.export())
    data, publication = encode_checkpoint_and_publication(original)
    assert decode_checkpoint(data) == original
    assert decode_checkpoint(publication) == evolve(original, recent_ids=())
    restored = RecentIds(3600.0, 100)
    restored.restore(decode_checkpoint(data).recent_ids, T0 + 1)
    resent = Event("m2", "x", T0, id_given=True)
    assert restored.count == 2 and restored.screen([resent], T0 + 1).duplicates == 1


def test_a_version_1_checkpoint_reads_as_one_without_recent_ids() -> None:
    original = checkpoint()
    wire = msgspec.msgpack.decode(encode_checkpoint(original)[22:])
    version_1 = _frame(_CHECKPOINT_MAGIC, 1, msgspec.msgpack.encode(wire[:-1]))  # 7 fields
    assert decode_checkpoint(version_1) == original


def test_a_well_framed_payload_of_the_wrong_shape_is_corrupt() -> None:
    with pytest.raises(CorruptCheckpoint, match="does not decode"):
        decode_checkpoint(_frame(_CHECKPOINT_MAGIC, CHECKPOINT_VERSION, b"\x93\x01\x02\x03"))

"""The journal's record framing and segment file names.

A segment file is records back to back, nothing else (no file header). One record::

    offset  size  field (little endian)
         0     4  magic, b"RJ\\x01\\n" (format version 1)
         4     4  payload length n (uint32)
         8     8  seq (uint64): 1, 2, 3... across segments, never reused
        16     8  appended at (int64): the journal clock, in milliseconds since the epoch
        24     4  crc32 (zlib) of bytes 0-23 followed by the payload
        28     n  payload (``records.encode_events``)

A record is good when its header is whole, its magic is right, its payload is whole, the
checksum matches and its seq is the one expected (the segment's first seq, then +1 each).
The first bad record is where the tail is cut: a crash mid-``write`` leaves a partial header
or payload; a power loss can leave zeroes or stale bytes (wrong magic or checksum).

A segment file is named after the seq of its first record, 20 digits, so that numbering
survives the deletion of every older segment: ``00000000000000000001.journal``.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib

MAGIC = b"RJ\x01\n"
_PREFIX = struct.Struct("<4sIQq")  # magic, payload length, seq, appended at (ms)
_CHECKSUM = struct.Struct("<I")
HEADER = struct.Struct("<4sIQqI")
HEADER_SIZE = HEADER.size  # 28
MAX_PAYLOAD = 0xFFFF_FFFF

SEGMENT_SUFFIX = ".journal"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.journal$")


def frame(payload: bytes, seq: int, appended_ms: int) -> bytes:
    """The record holding ``payload`` as record ``seq``, appended at ``appended_ms``."""
    prefix = _PREFIX.pack(MAGIC, len(payload), seq, appended_ms)
    checksum = zlib.crc32(payload, zlib.crc32(prefix))
    return b"".join((prefix, _CHECKSUM.pack(checksum), payload))


def check_record(
    buffer: bytes | mmap.mmap, offset: int, end: int, expected_seq: int
) -> tuple[int, int] | str:
    """``(appended_ms, payload_length)`` of the record at ``offset`` when it is good, else why
    it is not. ``buffer`` holds the segment (its bytes, or an mmap of it) up to
    ``end``."""
    if end - offset < HEADER_SIZE:
        return "partial header"
    magic, length, seq, appended_ms, checksum = HEADER.unpack_from(buffer, offset)
    if magic != MAGIC:
        return "not a record header"
    start = offset + HEADER_SIZE
    if length > end - start:
        return "partial payload"
    expected = zlib.crc32(buffer[start : start + length], zlib.crc32(buffer[offset : offset + 24]))
    if checksum != expected:
        return "bad checksum"
    if seq != expected_seq:
        return f"seq {seq} where {expected_seq} was expected"
    return appended_ms, length


def read_header(raw: bytes) -> tuple[int, int, int] | None:
    """``(seq, appended_ms, payload_length)`` from a header's bytes, without the checksum;
    None when they are not a header."""
    if len(raw) < HEADER_SIZE:
        return None
    magic, length, seq, appended_ms, _ = HEADER.unpack_from(raw)
    if magic != MAGIC:
        return None
    return seq, appended_ms, length


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def segment_first_seq(name: str) -> int | None:
    """The first seq a segment file's name carries, or None for a file that is not one."""
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None

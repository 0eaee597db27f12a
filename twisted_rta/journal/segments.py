"""Reading the journal's segment files: the scan at open, replay, and one record's time.

``scan_directory`` runs once, synchronously, when the journal opens. It fsyncs every segment
(a crashed process may have left records only in the page cache), validates every
record of every segment in seq order (framing, checksum, seq continuity across files) and
treats the first bad record as the start of a torn tail: that segment is truncated at the
last good record, every later segment file is removed, and the cut is returned (and logged
once). Corruption is never skipped over: what follows a bad record cannot be trusted to be
the records that were written there.

A ``Segment`` keeps, besides its size, the time of its first record and a sparse index
(every ``INDEX_EVERY``-th record's offset), so that replay and the time of any one record
start reading close to it instead of at the start of the file.
"""

from __future__ import annotations

import mmap
import os
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path

from attrs import define, field, frozen
from twisted.logger import Logger

from twisted_rta.journal.errors import JournalCorrupt
from twisted_rta.journal.framing import (
    HEADER_SIZE,
    check_record,
    read_header,
    segment_first_seq,
)

log = Logger()

INDEX_EVERY = 256  # records between two entries of a segment's offset index


@frozen
class TornTail:
    """What the scan at open cut: from ``offset`` of ``segment`` (a file name) to the end of
    the journal, ``bytes_cut`` bytes in all, because of ``reason``."""

    segment: str
    offset: int
    bytes_cut: int
    reason: str


@define
class Segment:
    """One segment file: records ``first_seq`` onwards, ``size`` bytes."""

    first_seq: int
    path: Path
    size: int = 0
    first_ms: int | None = None  # when its first record was appended; None while empty
    _index_seqs: array[int] = field(factory=lambda: array("q"), repr=False)
    _index_offsets: array[int] = field(factory=lambda: array("q"), repr=False)

    def added(self, seq: int, offset: int, appended_ms: int) -> None:
        """Record ``seq`` now sits at ``offset``."""
        if self.first_ms is None:
            self.first_ms = appended_ms
        if (seq - self.first_seq) % INDEX_EVERY == 0:
            self._index_seqs.append(seq)
            self._index_offsets.append(offset)

    def near(self, seq: int) -> tuple[int, int]:
        """``(seq_at, offset)`` of an indexed record at or before ``seq`` (of this segment)."""
        position = bisect_right(self._index_seqs, seq) - 1
        if position < 0:
            return self.first_seq, 0
        return self._index_seqs[position], self._index_offsets[position]


@frozen
class Scan:
    """The segments found valid, oldest first, and what was cut."""

    segments: list[Segment]
    last_seq: int
    records: int
    torn_tail: TornTail | None


def scan_directory(directory: Path) -> Scan:
    """Validate every segment in ``directory``, cut a torn tail, return what remains."""
    files = sorted(
        (first, path)
        for path in directory.iterdir()
        if (first := segment_first_seq(path.name)) is not None and path.is_file()
    )
    segments: list[Segment] = []
    records = 0
    last_seq = files[0][0] - 1 if files else 0
    for position, (first, path) in enumerate(files):
        if first != last_seq + 1:
            reason = f"segment starts at seq {first} where {last_seq + 1} was expected"
            torn = _cut(files[position:], None, 0, reason)
            break
        segment = Segment(first, path)
        problem, kept = _scan_segment(segment)
        segments.append(segment)
        records += kept
        last_seq = first + kept - 1
        if problem is not None:
            torn = _cut(files[position + 1 :], segment, segment.size, problem)
            break
    else:
        torn = None
    if torn is not None:
        log.warn(
            "journal: cut {bytes_cut} bytes of a torn tail at {segment}:{offset} ({reason}); "
            "kept {records} records",
            bytes_cut=torn.bytes_cut,
            segment=torn.segment,
            offset=torn.offset,
            reason=torn.reason,
            records=records,
        )
        fsync_directory(directory)
    return Scan(segments, last_seq, records, torn)


def _scan_segment(segment: Segment) -> tuple[str | None, int]:
    """Index ``segment``'s good records, set its size to where they end; return the problem
    found after them (None when the file ends cleanly) and how many there are."""
    with segment.path.open("rb") as file:
        end = os.fstat(file.fileno()).st_size
        if end == 0:
            return None, 0
        # What a crashed process wrote may still be only in the page cache: make it as
        # durable as what this process will fsync, before anyone relies on it.
        os.fsync(file.fileno())
        with mmap.mmap(file.fileno(), end, access=mmap.ACCESS_READ) as view:
            offset = 0
            seq = segment.first_seq
            while offset < end:
                found = check_record(view, offset, end, seq)
                if isinstance(found, str):
                    segment.size = offset
                    return found, seq - segment.first_seq
                appended_ms, length = found
                segment.added(seq, offset, appended_ms)
                offset += HEADER_SIZE + length
                seq += 1
    segment.size = end
    return None, seq - segment.first_seq


def _cut(
    later: list[tuple[int, Path]], segment: Segment | None, offset: int, reason: str
) -> TornTail:
    """Truncate ``segment`` at ``offset`` (when given) and remove the ``later`` files."""
    cut = 0
    if segment is not None:
        with segment.path.open("r+b") as file:
            cut += os.fstat(file.fileno()).st_size - offset
            file.truncate(offset)
            os.fsync(file.fileno())
    for _, path in later:
        cut += path.stat().st_size
        path.unlink()
    where = segment.path.name if segment is not None else later[0][1].name
    return TornTail(segment=where, offset=offset, bytes_cut=cut, reason=reason)


def read_payloads(
    segment: Segment, after_seq: int, last_seq: int, size: int
) -> Iterator[tuple[int, bytes]]:
    """``(seq, payload)`` of the records of ``segment`` with ``after_seq < seq <= last_seq``,
    in order, read from its first ``size`` bytes and checked again (JournalCorrupt)."""
    if size == 0:
        return
    seq, offset = segment.near(after_seq + 1)
    with (
        segment.path.open("rb") as file,
        mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as view,
    ):
        while seq <= last_seq and offset < size:
            found = check_record(view, offset, size, seq)
            if isinstance(found, str):
                raise JournalCorrupt(f"{segment.path.name}:{offset}: {found}")
            start = offset + HEADER_SIZE
            offset = start + found[1]
            if seq > after_seq:
                yield seq, view[start:offset]
            seq += 1
    if seq <= last_seq:
        raise JournalCorrupt(f"{segment.path.name} ends before record {seq}")


def appended_ms(segment: Segment, seq: int) -> int | None:
    """When record ``seq`` of ``segment`` was appended, read from its header (None when the
    file does not hold it)."""
    if seq == segment.first_seq:
        return segment.first_ms
    at, offset = segment.near(seq)
    fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while offset < segment.size:
            header = read_header(os.pread(fd, HEADER_SIZE, offset))
            if header is None or header[0] != at:
                return None
            if at == seq:
                return header[1]
            offset += HEADER_SIZE + header[2]
            at += 1
    finally:
        os.close(fd)
    return None


def fsync_directory(directory: Path | str) -> None:
    """Make the directory's entries (a file created, removed or truncated) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

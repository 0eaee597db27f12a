"""Journal: the local append-only log of accepted events, written before the 202.

Every accepted request becomes one record (``framing``) holding its events (``records``),
numbered 1, 2, 3... ``append`` hands the record to the OS with ``os.write`` on the active
segment's fd before it returns, with no buffer of ours in between: from then on a crash or
kill -9 of the process cannot lose it. Power loss is the fsync's business, set by ``policy``:

- ``interval``: a ``Periodic`` tick fsyncs every ``fsync_interval`` seconds, in a thread,
  when something was written; ``durable()`` is already fired.
- ``always``: ``durable(seq)`` fires once an fsync covering ``seq`` has completed; fsyncs
  run one at a time and each covers every record written before it started (``sync``).

No fsync, and no close of an fd an fsync might use, ever runs on the reactor thread.

Records live in segment files of about ``segment_bytes`` each, named after their first seq.
``release_through(seq)`` deletes the segments that hold nothing newer than ``seq`` (the
checkpointer calls it once the store holds what those records fed); at most ``max_bytes``
stay on disk, past which ``append`` raises ``JournalFull``. ``Journal.open`` validates the
files and cuts a torn tail (``segments``); ``replay(after_seq)`` reads the rest back.

Ownership: one process per directory (the caller holds the node's state directory lock),
every method on the reactor thread; ``open`` is synchronous and runs before the reactor
serves. Do not release segments while a ``replay`` iterator is being consumed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from attrs import define
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.events.model import Event
from twisted_rta.journal.errors import JournalCorrupt, JournalFull, JournalWriteError
from twisted_rta.journal.framing import HEADER_SIZE, MAX_PAYLOAD, frame, segment_name
from twisted_rta.journal.records import decode_events, encode_events
from twisted_rta.journal.segments import (
    Segment,
    TornTail,
    appended_ms,
    fsync_directory,
    read_payloads,
    scan_directory,
)
from twisted_rta.journal.sync import FileSyncer
from twisted_rta.periodic import Periodic

__all__ = [
    "POLICIES",
    "Journal",
    "JournalCorrupt",
    "JournalFull",
    "JournalWriteError",
    "TornTail",
]

log = Logger()

T = TypeVar("T")

POLICIES = ("interval", "always")

_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


@define(repr=False)
class Journal:
    """The journal in ``directory``; build it with ``Journal.open``."""

    directory: Path
    policy: str
    max_bytes: int
    segment_bytes: int
    torn_tail: TornTail | None
    last_seq: int  # the last record's seq; 0 while nothing was ever written
    size_bytes: int  # bytes in all segment files
    released_seq: int  # the highest seq released (at open: the one before the oldest kept)
    _clock: IReactorTime
    _segments: list[Segment]  # oldest first; the last one is active (written to)
    _fd: int  # the active segment's, opened for appending
    _syncer: FileSyncer
    _periodic: Periodic
    _refusal: str | None = None  # why every append now fails (closed, or could not recover)
    _oldest: tuple[int, float | None] | None = None  # (seq, its time), cached

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        clock: IReactorTime,
        run_in_thread: Callable[[Callable[[], T]], Deferred[T]],
        policy: str = "interval",
        fsync_interval: float = 0.2,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
    ) -> Journal:
        """Open (or create) the journal in ``directory``: validate every record, cut a torn
        tail, and get ready to append after the last good record. Synchronous; an OSError
        (an unreadable directory) propagates."""
        if policy not in POLICIES:
            raise ValueError(f"journal policy must be one of {POLICIES}, not {policy!r}")
        if fsync_interval <= 0 or max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("fsync_interval, max_bytes and segment_bytes must be positive")
        directory = Path(directory)
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_directory(directory.parent)
        scan = scan_directory(directory)
        segments = scan.segments
        if segments:
            fd = os.open(segments[-1].path, _APPEND_FLAGS)
        else:
            segment, fd = _create_segment(directory, scan.last_seq + 1)
            segments = [segment]
            fsync_directory(directory)
        syncer = FileSyncer(
            run_in_thread, directory, fd, written=scan.last_seq, synced=scan.last_seq
        )
        journal = cls(
            directory=directory,
            policy=policy,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            torn_tail=scan.torn_tail,
            last_seq=scan.last_seq,
            size_bytes=sum(segment.size for segment in segments),
            released_seq=segments[0].first_seq - 1,
            clock=clock,
            segments=segments,
            fd=fd,
            syncer=syncer,
            periodic=Periodic("journal fsync", syncer.tick, clock=clock, interval=fsync_interval),
        )
        log.info(
            "journal: opened {directory}: {records} records through seq {last}, "
            "{size} bytes in {count} segments, fsync {policy}",
            directory=str(directory),
            last=journal.last_seq,
            records=journal.last_seq - journal.released_seq,
            size=journal.size_bytes,
            count=len(segments),
            policy=policy,
        )
        return journal

    def __repr__(self) -> str:
        return (
            f"<Journal {str(self.directory)!r} last_seq={self.last_seq} "
            f"released_seq={self.released_seq} size_bytes={self.size_bytes}>"
        )

    # -----------------------------------------------------------------------------------
    # What the rest of the daemon reads

    @property
    def fsync_interval(self) -> float:
        return self._periodic.interval

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def fsyncs(self) -> int:
        """Completed fsync rounds (one round syncs every file that needed it)."""
        return self._syncer.rounds

    @property
    def fsync_failures(self) -> int:
        return self._syncer.failures

    @property
    def synced_seq(self) -> int:
        """Every record through this one was on disk after a completed fsync."""
        return self._syncer.synced

    def room_for(self, events: int) -> bool:
        """Whether an append may be tried: False once the journal is at ``max_bytes``.
        (``append`` does the exact accounting.)"""
        return self.size_bytes < self.max_bytes

    def oldest_unreleased_at(self) -> float | None:
        """When the oldest record past ``released_seq`` was appended (clock seconds, to the
        millisecond, read from its header), or None when there is none."""
        seq = self.released_seq + 1
        if seq > self.last_seq:
            return None
        cached = self._oldest
        if cached is not None and cached[0] == seq:
            return cached[1]
        holder = self._segments[0]
        for segment in self._segments:
            if segment.first_seq > seq:
                break
            holder = segment
        milliseconds = appended_ms(holder, seq)
        at = None if milliseconds is None else milliseconds / 1000
        self._oldest = (seq, at)
        return at

    def replay(self, after_seq: int) -> Iterator[tuple[int, tuple[Event, ...]]]:
        """``(seq, events)`` of every record with ``seq > after_seq``, in order, read from
        disk (records appended after this call are not included). Raises JournalCorrupt
        while iterating if a file no longer holds what the scan at open validated."""
        segments = self._segments
        plan: list[tuple[Segment, int, int]] = []
        for position, segment in enumerate(segments):
            is_last = position + 1 == len(segments)
            end = self.last_seq if is_last else segments[position + 1].first_seq - 1
            if end > after_seq and segment.size:
                plan.append((segment, end, segment.size))
        return _replay(plan, after_seq)

    # -----------------------------------------------------------------------------------
    # Writing

    def append(self, events: Sequence[Event]) -> int:
        """Write ``events`` as the next record, to the OS, and return its seq.

        Raises JournalFull (past ``max_bytes``) or JournalWriteError (the OS refused; a
        partial write is truncated back), and the journal is as before the call.
        """
        if self._refusal is not None:
            raise JournalWriteError(self._refusal)
        payload = encode_events(events)
        size = HEADER_SIZE + len(payload)
        if self.size_bytes + size > self.max_bytes:
            raise JournalFull(
                f"a record of {size} bytes would take the journal past its {self.max_bytes} "
                f"bytes ({self.size_bytes} bytes held)"
            )
        if len(payload) > MAX_PAYLOAD:
            raise JournalFull(f"a record of {size} bytes is larger than a record can be")
        active = self._segments[-1]
        if active.size and active.size + size > self.segment_bytes:
            self._roll(self.last_seq + 1)
            active = self._segments[-1]
        seq = self.last_seq + 1
        appended = round(self._clock.seconds() * 1000)
        offset = active.size
        self._write(frame(payload, seq, appended), offset, active)
        active.size = offset + size
        active.added(seq, offset, appended)
        self.size_bytes += size
        self.last_seq = seq
        self._syncer.written = seq
        return seq

    def durable(self, seq: int) -> Deferred[None]:
        """Fires once record ``seq`` survives a power loss as the policy promises: at once
        under ``interval``; after an fsync that covers it under ``always`` (errback with
        JournalWriteError when that fsync fails)."""
        if seq > self.last_seq:
            raise ValueError(f"record {seq} was not written (the last one is {self.last_seq})")
        if self.policy == "interval":
            return succeed(None)
        return self._syncer.wait(seq)

    def start(self) -> None:
        """Start the periodic fsync (every ``fsync_interval`` seconds, when something was
        written since the last one; under ``always`` it only catches records nobody waited
        for and the fds of rolled segments)."""
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def release_through(self, seq: int) -> int:
        """Everything through ``seq`` is held elsewhere: delete the segment files holding
        nothing newer (rolling first when the active one is covered), return the bytes freed.

        Numbering always continues past ``seq``: releasing beyond ``last_seq`` moves the next
        seq to ``seq + 1``. Raises JournalWriteError when the new segment cannot be created
        (nothing is released then).
        """
        if seq <= self.released_seq:
            return 0
        active = self._segments[-1]
        if seq > self.last_seq or (seq == self.last_seq and active.size):
            if self._refusal is None:
                self._roll(seq + 1)
            elif seq > self.last_seq:  # the numbering could not move past seq
                raise JournalWriteError(self._refusal)
        self.released_seq = seq
        self._oldest = None
        freed = 0
        segments = self._segments
        while len(segments) > 1 and segments[1].first_seq - 1 <= seq:
            doomed = segments[0]
            try:
                doomed.path.unlink(missing_ok=True)
            except OSError as error:
                log.warn(
                    "journal: could not delete {segment} ({reason}); kept for now",
                    segment=doomed.path.name,
                    reason=error.strerror or str(error),
                )
                break
            del segments[0]
            freed += doomed.size
        if freed:
            self.size_bytes -= freed
            self._syncer.directory_changed()
        return freed

    def close(self) -> Deferred[None]:
        """Stop, then a last fsync of everything and close every fd, in a thread. Appends
        fail from now on; records already written stay durable-awaitable until it fires."""
        self.stop()
        self._refusal = "the journal is closed"
        return self._syncer.close()

    # -----------------------------------------------------------------------------------

    def _write(self, record: bytes, offset: int, segment: Segment) -> None:
        fd = self._fd
        try:
            written = os.write(fd, record)
            if written < len(record):
                view = memoryview(record)
                while written < len(record):
                    count = os.write(fd, view[written:])
                    if count <= 0:
                        raise OSError(errno.EIO, "the write wrote nothing")
                    written += count
        except OSError as error:
            reason = error.strerror or str(error)
            try:
                os.ftruncate(fd, offset)
            except OSError as undo:
                self._refusal = (
                    f"a failed write to {segment.path.name} could not be truncated back "
                    f"({undo.strerror or undo}); the journal takes nothing until a restart "
                    "cuts it"
                )
                log.critical("journal: {reason}", reason=self._refusal, segment=segment.path.name)
            raise JournalWriteError(f"writing {segment.path.name} failed: {reason}") from error

    def _roll(self, first_seq: int) -> None:
        """Make a new segment starting at ``first_seq`` the active one."""
        segment, fd = _create_segment(self.directory, first_seq)
        self._segments.append(segment)
        self._fd = fd
        self._syncer.switch(fd)
        if first_seq - 1 > self.last_seq:
            self.last_seq = first_seq - 1
            self._syncer.written = self.last_seq


def _create_segment(directory: Path, first_seq: int) -> tuple[Segment, int]:
    path = directory / segment_name(first_seq)
    try:
        fd = os.open(path, _APPEND_FLAGS | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as error:
        raise JournalWriteError(
            f"creating the journal segment {path.name} failed: {error.strerror or error}"
        ) from error
    return Segment(first_seq, path), fd


def _replay(
    plan: list[tuple[Segment, int, int]], after_seq: int
) -> Iterator[tuple[int, tuple[Event, ...]]]:
    for segment, end, size in plan:
        for seq, payload in read_payloads(segment, after_seq, end, size):
            yield seq, decode_events(payload)

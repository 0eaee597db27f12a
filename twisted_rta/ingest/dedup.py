"""Recent event ids: which client-given ids this node accepted within the horizon, so a
resend (an SDK's retry, a replayed queue) is acknowledged and not counted again.

Only ids the client sent are checked (``Event.id_given``): an id we drew is unique already.
Each id is kept as a 64-bit BLAKE2b digest (stable across restarts, so a checkpoint can
hold it; two distinct ids collide with odds of about n^2 / 2^65: one in 37 million at a
million ids). Ids are grouped by arrival into ``SLICES`` slices of the horizon; a slice is
forgotten whole once all of it is older than the horizon, so an id is remembered for at
least ``horizon`` and at most ``horizon * (1 + 1/SLICES)``.

When full (``max_ids``), the oldest ids are forgotten first, one by one, and counted in
``evicted``: the horizon shrinks for the rest rather than a new id going unchecked or
a request being refused. About 90 bytes of memory per id (RSS; 78 of Python heap) and
8 bytes of each checkpoint; about 1 us per event with a given id (``benchmarks/dedup.py``).

Pure: time is passed in, nothing here knows Twisted.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from hashlib import blake2b

from attrs import define, field, frozen

from twisted_rta.events.model import Event

SLICES = 24
_LITTLE_ENDIAN = sys.byteorder == "little"

#: A checkpoint's form of the ids: (slice start, the slice's digests as little-endian u64s).
ExportedIds = tuple[tuple[float, bytes], ...]


def id_digest(event_id: str) -> int:
    """The 64-bit digest an id is remembered by."""
    return int.from_bytes(
        blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


@frozen
class Screened:
    """A request's events with the resent ones left out, and the digests to remember."""

    events: Sequence[Event]
    duplicates: int
    digests: list[int]


@define
class RecentIds:
    horizon: float
    max_ids: int
    evicted: int = 0  # ids forgotten before the horizon because max_ids was reached
    _members: set[int] = field(factory=set)
    _slices: deque[tuple[float, array[int]]] = field(factory=deque)  # oldest first

    @property
    def count(self) -> int:
        return len(self._members)

    def oldest_age(self, now: float) -> float:
        """How long ago the oldest remembered slice began (0 when empty; its oldest id may
        be up to a slice younger): the horizon in effect, shorter than ``horizon`` after
        evictions. As of the last request: expiry runs when ids are screened."""
        return max(0.0, now - self._slices[0][0]) if self._slices else 0.0

    def screen(self, events: Sequence[Event], now: float) -> Screened:
        """``events``, arriving at ``now``, without those whose given id was seen within
        the horizon (or earlier in ``events``). Remembers nothing: the caller calls
        ``remember`` with the result's digests once the events are taken."""
        self.forget_expired(now)  # after a quiet spell, ids past the horizon are not resends
        members = self._members
        kept: list[Event] | None = None
        digests: list[int] = []
        here: set[int] = set()
        for index, event in enumerate(events):
            if not event.id_given:
                if kept is not None:
                    kept.append(event)
                continue
            digest = id_digest(event.id)
            if digest in members or digest in here:
                if kept is None:
                    kept = list(events[:index])
                continue
            here.add(digest)
            digests.append(digest)
            if kept is not None:
                kept.append(event)
        if kept is None:
            return Screened(events, 0, digests)
        return Screened(kept, len(events) - len(kept), digests)

    def remember_events(self, events: Iterable[Event], now: float) -> None:
        """Remember the given ids of ``events`` (a journal record replayed at start)."""
        self.remember([id_digest(event.id) for event in events if event.id_given], now)

    def remember(self, digests: Sequence[int], now: float) -> None:
        """Remember ``digests`` (from ``screen``), accepted at ``now``."""
        self.forget_expired(now)
        if not digests:
            return
        members = self._members
        new = [digest for digest in dict.fromkeys(digests) if digest not in members]
        if not new:
            return
        width = self.horizon / SLICES
        start = now - now % width
        slices = self._slices
        if not slices or slices[-1][0] < start:
            slices.append((start, array("Q")))
        slices[-1][1].extend(new)  # a clock stepping back files them in the newest slice
        members.update(new)
        self._evict_over_limit()

    def forget_expired(self, now: float) -> None:
        """Forget every slice wholly older than the horizon."""
        width = self.horizon / SLICES
        slices = self._slices
        while slices and slices[0][0] + width <= now - self.horizon:
            _, digests = slices.popleft()
            self._members.difference_update(digests)

    def _evict_over_limit(self) -> None:
        excess = len(self._members) - self.max_ids
        slices = self._slices
        while excess > 0 and slices:
            digests = slices[0][1]
            taken = min(excess, len(digests))
            self._members.difference_update(digests[:taken])
            del digests[:taken]
            if not digests:
                slices.popleft()
            self.evicted += taken
            excess -= taken

    def export(self) -> ExportedIds:
        """The ids for a checkpoint (``restore`` reads it back)."""
        out = []
        for start, digests in self._slices:
            if not _LITTLE_ENDIAN:
                digests = array("Q", digests)
                digests.byteswap()
            out.append((start, digests.tobytes()))
        return tuple(out)

    def restore(self, exported: ExportedIds, now: float) -> None:
        """Add the ids of a checkpoint (taken before every id remembered since)."""
        restored: deque[tuple[float, array[int]]] = deque()
        for start, data in exported:
            digests = array("Q")
            digests.frombytes(data)
            if not _LITTLE_ENDIAN:
                digests.byteswap()
            restored.append((start, digests))
            self._members.update(digests)
        restored.extend(self._slices)
        self._slices = restored
        self.forget_expired(now)
        self._evict_over_limit()

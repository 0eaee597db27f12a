"""Cookieless visitor ids for the browser endpoints: a keyed hash of the period's secret
salt, the site, the client's address and its User-Agent, so neither is kept anywhere.

Salts rotate every ``privacy.salt_rotation`` (UTC-aligned periods) and live in the store,
so every node hashes a client to the same id (store/salts.py keeps them here). The id of a
client changes with the period; so that a visit across the boundary stays one visitor, the
id made with the previous period's salt is taken when it was seen within the last
``session_gap`` seconds (as Plausible does).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

from attrs import define, field, frozen

DEFAULT_SESSION_GAP = 1800.0  # a visit ends after 30 minutes without an event
DEFAULT_MAX_RECENT = 200_000  # ids remembered for the boundary rule (~30 MB at most)


@define
class VisitorIds:
    """Visitor ids from the salts the store holds for each period (``period`` seconds)."""

    period: float
    session_gap: float = DEFAULT_SESSION_GAP
    max_recent: int = DEFAULT_MAX_RECENT
    # Period start -> salt: the current period, the one before, and the next one (made in
    # advance, so the id changes on time at the boundary without waiting for the store).
    _salts: dict[int, bytes] = field(factory=dict, init=False)
    # Recently seen ids and their visit, oldest first (bounded).
    _recent: OrderedDict[str, _Seen] = field(factory=OrderedDict, init=False)

    def use_salts(self, salts: Mapping[int, bytes]) -> None:
        """Take the salts the store gave (period start -> salt)."""
        self._salts = dict(salts)

    def ready(self, now: float) -> bool:
        """Whether the salt of ``now``'s period is known."""
        return self._start(now) in self._salts

    def visitor(self, site: str, address: str, user_agent: str, now: float) -> str | None:
        """The visitor id of this client on ``site`` at ``now``; None while the period's
        salt is unknown (the store has not answered yet)."""
        start = self._start(now)
        salt = self._salts.get(start)
        if salt is None:
            return None
        chosen = _digest(salt, site, address, user_agent)
        previous_salt = self._salts.get(start - int(self.period))
        if chosen not in self._recent and previous_salt is not None:
            before = _digest(previous_salt, site, address, user_agent)
            seen = self._recent.get(before)
            if seen is not None and now - seen.last <= self.session_gap:
                chosen = before  # the same visit, across the boundary
        self._remember(chosen, now)
        return chosen

    def _start(self, now: float) -> int:
        return int(now - now % self.period)

    def visit(self, visitor: str, *, pageview: bool) -> VisitStep:
        """Where the event of ``visitor`` (just returned by ``visitor``; once per event) stands
        in its visit: a new visit begins after ``session_gap`` seconds without an event. The
        visit id is the events' session id, so ``unique_sessions`` counts visits. (Per node:
        a visit whose events reach two nodes is two visits.)"""
        seen = self._recent[visitor]
        if pageview:
            seen.pageviews += 1
        visit_id = hashlib.blake2b(
            f"{visitor}:{seen.began!r}".encode("ascii"), digest_size=12
        ).hexdigest()
        added = None if seen.previous is None else seen.last - seen.previous
        return VisitStep(visit_id, added, seen.pageviews if pageview else None)

    def _remember(self, visitor: str, now: float) -> None:
        recent = self._recent
        seen = recent.get(visitor)
        if seen is None or now - seen.last > self.session_gap:
            recent[visitor] = _Seen(last=now, began=now)
        else:
            # A late request (now before last) adds nothing to the visit's duration.
            seen.previous, seen.last = seen.last, max(now, seen.last)
        recent.move_to_end(visitor)
        while len(recent) > self.max_recent:
            recent.popitem(last=False)


@define(slots=True)
class _Seen:
    """A remembered visitor: its visit's start, its last two events, the visit's pageviews."""

    last: float
    began: float
    previous: float | None = None  # the event before ``last`` in this visit; None: one so far
    pageviews: int = 0


@frozen
class VisitStep:
    """An event's place in its visit, as the web metrics need it (README: "Web analytics")."""

    visit_id: str
    # Seconds since the visit's previous event: what this event adds to the visit's
    # duration. None: the visit's first event (its entry).
    added_seconds: float | None
    pageview: int | None  # the pageview's number within the visit; None: not a pageview

    @property
    def entry(self) -> bool:
        return self.added_seconds is None


def _digest(salt: bytes, site: str, address: str, user_agent: str) -> str:
    """BLAKE2b keyed with the salt: without the salt, an id says nothing of its inputs."""
    data = "\x00".join((site, address, user_agent)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, key=salt, digest_size=16).hexdigest()

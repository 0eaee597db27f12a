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

from attrs import define, field

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
    # Recently seen ids -> (when last seen, when their visit began), oldest first (bounded).
    _recent: OrderedDict[str, tuple[float, float]] = field(factory=OrderedDict, init=False)

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
            if seen is not None and now - seen[0] <= self.session_gap:
                chosen = before  # the same visit, across the boundary
        self._remember(chosen, now)
        return chosen

    def _start(self, now: float) -> int:
        return int(now - now % self.period)

    def visit(self, visitor: str) -> str:
        """The id of the visit ``visitor`` (just returned by ``visitor``) is in: a new one
        after ``session_gap`` seconds without an event. It is the events' session id, so
        ``unique_sessions`` counts visits. (Per node: a visit whose events reach two nodes
        is two visits.)"""
        _, began = self._recent[visitor]
        return hashlib.blake2b(f"{visitor}:{began!r}".encode("ascii"), digest_size=12).hexdigest()

    def _remember(self, visitor: str, now: float) -> None:
        recent = self._recent
        seen = recent.get(visitor)
        began = seen[1] if seen is not None and now - seen[0] <= self.session_gap else now
        recent[visitor] = (now, began)
        recent.move_to_end(visitor)
        while len(recent) > self.max_recent:
            recent.popitem(last=False)


def _digest(salt: bytes, site: str, address: str, user_agent: str) -> str:
    """BLAKE2b keyed with the salt: without the salt, an id says nothing of its inputs."""
    data = "\x00".join((site, address, user_agent)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, key=salt, digest_size=16).hexdigest()

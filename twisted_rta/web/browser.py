"""What the browser endpoints add to ingest: cookieless visitor ids, the crawler filter,
Do Not Track, and the count of browser events answered 202 but not counted."""

from __future__ import annotations

from attrs import define, field, frozen

from twisted_rta.events.model import Event
from twisted_rta.web.bots import BotDetector
from twisted_rta.web.enrichment import ENRICHED, Enricher
from twisted_rta.web.visitors import VisitorIds, VisitStep

BOT, DNT, ENGAGEMENT = "bot", "dnt", "engagement"
# Plausible's tracker (v2) reports time on page as an "engagement" event on every page
# leave: not an event a person did, so it is answered and not counted.
NOT_COUNTED_NAMES = frozenset({"engagement"})
# A hit names its sites in "domain" (a list for roll-ups): a few, never thousands.
MAX_SITES_PER_HIT = 10
# The properties that place a browser event in its visit (the web metrics read them):
# ``entry`` (true) on a visit's first event, ``visit_seconds`` (what the event adds to the
# visit's duration) on the others, ``visit_pageview`` (1, 2, ...) on pageviews.
ENTRY, VISIT_SECONDS, VISIT_PAGEVIEW = "entry", "visit_seconds", "visit_pageview"
VISIT_PROPERTIES = (ENTRY, VISIT_SECONDS, VISIT_PAGEVIEW)


def site_of(domain: str) -> str:
    """The site a domain counts under: ``www.example.com`` is ``example.com``, as in
    Plausible."""
    return domain[4:] if domain.startswith("www.") and len(domain) > 4 else domain


@define
class BrowserDrops:
    """Browser events answered 202 and not counted, by reason, since the start (read by
    the status snapshot, like every other since-start counter)."""

    counts: dict[str, int] = field(factory=lambda: {BOT: 0, DNT: 0, ENGAGEMENT: 0})

    def add(self, reason: str, events: int = 1) -> None:
        self.counts[reason] += events


@frozen
class BrowserPolicy:
    """The browser endpoints' own rules, shared by both lanes through the ingest handler."""

    visitors: VisitorIds
    bots: BotDetector
    drops: BrowserDrops
    honor_do_not_track: bool
    enricher: Enricher = field(factory=Enricher)

    def refusal(self, user_agent: str | None, dnt: bytes | None, gpc: bytes | None) -> str | None:
        """Why a browser event is answered 202 and not counted (``BOT``, ``DNT``), or None."""
        if self.bots.is_bot(user_agent):
            return BOT
        if self.honor_do_not_track and (dnt == b"1" or gpc == b"1"):
            return DNT
        return None


def enriched(
    event: Event,
    found: dict[str, str],
    max_properties: int,
    url_keys: frozenset[str],
    visit: VisitStep,
) -> Event:
    """``event`` in its ``visit`` (its session id and ``VISIT_PROPERTIES``) with the
    enrichment ``found`` added to its properties (ours win over props of the same name).
    Within ``max_properties``: custom props go first, from the last, then enrichment from
    the last, never the keys the decoder set (``url_keys``) nor the visit's."""
    placed: dict[str, object] = {}
    if visit.added_seconds is None:
        placed[ENTRY] = True
    else:
        placed[VISIT_SECONDS] = visit.added_seconds
    if visit.pageview is not None:
        placed[VISIT_PAGEVIEW] = visit.pageview
    ours = found.keys() | set(VISIT_PROPERTIES)  # a prop cannot pose as a visit key
    properties = {k: v for k, v in event.properties.items() if k not in ours}
    properties.update(found)
    properties.update(placed)
    excess = len(properties) - max_properties
    if excess > 0:
        custom = [
            k
            for k in properties
            if k not in url_keys and k not in ENRICHED and k not in VISIT_PROPERTIES
        ]
        extra = [k for k in ENRICHED if k in properties]
        for key in (custom[::-1] + extra[::-1])[:excess]:
            del properties[key]
    return Event(
        event.id,
        event.type,
        event.timestamp,
        event.user_id,
        visit.visit_id,
        properties,
        event.id_given,
    )

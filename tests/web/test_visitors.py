"""Cookieless visitor ids: one per client and site within a salt period, a visit across
the boundary stays one, nothing of the inputs can be read back without the salt."""

from __future__ import annotations

from twisted_rta.web.visitors import VisitorIds, VisitStep

DAY = 86400
T0 = 1_795_737_600  # a UTC midnight
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
OTHER_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"


def ids() -> VisitorIds:
    visitors = VisitorIds(period=DAY)
    visitors.use_salts({T0 - DAY: b"y" * 32, T0: b"t" * 32, T0 + DAY: b"n" * 32})
    return visitors


def test_same_address_and_agent_is_one_visitor_per_site() -> None:
    visitors = ids()
    first = visitors.visitor("a.com", "192.0.2.1", UA, T0 + 10)
    assert first is not None and len(first) == 32
    assert visitors.visitor("a.com", "192.0.2.1", UA, T0 + 5000) == first
    assert visitors.visitor("a.com", "192.0.2.1", OTHER_UA, T0 + 20) != first
    assert visitors.visitor("a.com", "192.0.2.2", UA, T0 + 20) != first
    assert visitors.visitor("b.com", "192.0.2.1", UA, T0 + 20) != first


def test_the_id_reveals_neither_input() -> None:
    visitor = ids().visitor("a.com", "192.0.2.1", UA, T0 + 10)
    assert visitor is not None
    assert "192" not in visitor and "Firefox" not in visitor
    # Another salt, another id: without the salt nobody can test a guess.
    other = VisitorIds(period=DAY)
    other.use_salts({T0: b"s" * 32})
    assert other.visitor("a.com", "192.0.2.1", UA, T0 + 10) != visitor


def test_a_new_period_is_a_new_visitor_unless_the_visit_goes_on() -> None:
    visitors = ids()
    evening = visitors.visitor("a.com", "192.0.2.1", UA, T0 + DAY - 60)
    # Active across midnight (within 30 minutes): the same visit, the same visitor.
    assert visitors.visitor("a.com", "192.0.2.1", UA, T0 + DAY + 60) == evening
    assert visitors.visitor("a.com", "192.0.2.1", UA, T0 + DAY + 1500) == evening
    # Another client seen only before midnight and back an hour later: a new visitor.
    earlier = visitors.visitor("a.com", "192.0.2.9", UA, T0 + DAY - 60)
    later = visitors.visitor("a.com", "192.0.2.9", UA, T0 + DAY + 3600)
    assert later is not None and later != earlier


def test_no_salt_no_id() -> None:
    visitors = VisitorIds(period=DAY)
    assert not visitors.ready(T0)
    assert visitors.visitor("a.com", "192.0.2.1", UA, T0) is None
    visitors.use_salts({T0: b"t" * 32})
    assert visitors.ready(T0 + 5) and not visitors.ready(T0 + DAY)


def test_remembered_ids_are_bounded() -> None:
    visitors = VisitorIds(period=DAY, max_recent=3)
    visitors.use_salts({T0 - DAY: b"y" * 32, T0: b"t" * 32})
    for n in range(10):
        visitors.visitor("a.com", f"192.0.2.{n}", UA, T0 + n)
    assert len(visitors._recent) == 3


def test_a_visit_ends_after_thirty_minutes_without_an_event() -> None:
    visitors = ids()
    first = visitors.visitor("a.com", "192.0.2.1", UA, T0 + 10)
    assert first is not None
    visit = visitors.visit(first, pageview=True).visit_id
    assert visitors.visitor("a.com", "192.0.2.1", UA, T0 + 1000) == first
    # 16 minutes later: the same visit.
    assert visitors.visit(first, pageview=True).visit_id == visit
    assert visitors.visitor("a.com", "192.0.2.1", UA, T0 + 1000 + 1801) == first
    later = visitors.visit(first, pageview=True).visit_id
    assert later != visit  # over 30 minutes without an event: a new visit
    other = visitors.visitor("a.com", "192.0.2.1", OTHER_UA, T0 + 2801)
    assert other is not None
    assert visitors.visit(other, pageview=True).visit_id not in (visit, later)


def test_each_step_says_where_the_event_stands_in_its_visit() -> None:
    visitors = ids()

    def step(now: float, *, pageview: bool) -> VisitStep:
        visitor = visitors.visitor("a.com", "192.0.2.1", UA, now)
        assert visitor is not None
        return visitors.visit(visitor, pageview=pageview)

    entry = step(T0 + 10, pageview=True)
    assert entry.entry and entry.added_seconds is None and entry.pageview == 1
    custom = step(T0 + 40, pageview=False)
    assert not custom.entry and custom.added_seconds == 30 and custom.pageview is None
    second = step(T0 + 100, pageview=True)
    assert (second.added_seconds, second.pageview) == (60, 2)
    # A request that arrives late adds nothing to the duration.
    assert step(T0 + 90, pageview=False).added_seconds == 0
    # The summed steps are the visit's duration: first to last event.
    assert sum(s.added_seconds or 0 for s in (entry, custom, second)) == 90
    # After 30 minutes without an event: a new visit, counted from its own entry.
    again = step(T0 + 100 + 1801, pageview=True)
    assert again.entry and again.pageview == 1 and again.visit_id != entry.visit_id

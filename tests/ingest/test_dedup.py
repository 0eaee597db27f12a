"""RecentIds: which client-given ids were taken within the horizon (ingest/dedup.py).

Pure: every instant is passed in. The horizon here is 24 slices of 100 s, so a slice is
``WIDTH`` long and ``NOW`` (a multiple of it) is a slice's start.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tests.helpers import NOW
from twisted_rta.events.model import Event
from twisted_rta.ingest.dedup import SLICES, RecentIds, id_digest
from twisted_rta.ingest.intake import Intake
from twisted_rta.ingest.queue import IntakeQueue

HORIZON = 2400.0
WIDTH = HORIZON / SLICES
LONGEST = HORIZON * (1 + 1 / SLICES)  # the most an id may be remembered


def given(event_id: str, kind: str = "x") -> Event:
    return Event(id=event_id, type=kind, timestamp=NOW, id_given=True)


def drawn(event_id: str, kind: str = "x") -> Event:
    return Event(id=event_id, type=kind, timestamp=NOW)


def recent(max_ids: int = 1_000) -> RecentIds:
    return RecentIds(HORIZON, max_ids)


def remember(ids: RecentIds, names: Iterable[str], now: float) -> None:
    ids.remember([id_digest(name) for name in names], now)


def known(ids: RecentIds, *names: str, now: float = NOW) -> list[str]:
    """Which of ``names`` a request at ``now`` would find resent (screened one by one)."""
    return [name for name in names if ids.screen([given(name)], now).duplicates]


def test_screen_leaves_out_known_ids_and_repeats_but_keeps_drawn_ids() -> None:
    ids = recent()
    remember(ids, ["old"], NOW)
    events = [
        given("a", "first"),
        drawn("d"),
        given("old"),  # taken before
        given("b"),
        given("a", "again"),  # a repeat within the request
        drawn("d"),  # a drawn id is never checked, even when it repeats
        given("c"),
        drawn("old"),  # nor when it equals a given id taken before
    ]
    screened = ids.screen(events, NOW)
    # These very events, in order (equal drawn events are told apart by identity).
    kept = [next(i for i, e in enumerate(events) if e is k) for k in screened.events]
    assert kept == [0, 1, 3, 5, 6, 7]  # "old" taken before and "a" again left out
    assert screened.duplicates == 2
    # The digests to remember: each new given id once, in order; no drawn id.
    assert screened.digests == [id_digest("a"), id_digest("b"), id_digest("c")]


def test_screen_of_nothing_resent_keeps_every_event_in_order() -> None:
    ids = recent()
    events = [drawn("d1"), given("g1"), drawn("d1"), given("g2")]
    screened = ids.screen(events, NOW)
    assert list(screened.events) == events
    assert screened.duplicates == 0
    assert screened.digests == [id_digest("g1"), id_digest("g2")]


def test_screen_of_resends_only_keeps_nothing() -> None:
    ids = recent()
    remember(ids, ["a", "b"], NOW)
    screened = ids.screen([given("b"), given("a"), given("b")], NOW)
    assert list(screened.events) == []
    assert (screened.duplicates, screened.digests) == (3, [])


def test_screen_remembers_nothing() -> None:
    ids = recent()
    events = [given("a"), given("b")]
    assert ids.screen(events, NOW).duplicates == 0
    assert ids.count == 0 and ids.export() == ()
    # Screened again (a refused request resent): still nothing left out.
    assert ids.screen(events, NOW).duplicates == 0
    assert known(ids, "a", "b") == []


def test_remember_then_screen_finds_the_ids_and_counts_each_once() -> None:
    ids = recent()
    ids.remember([id_digest("a"), id_digest("b"), id_digest("a")], NOW)
    assert ids.count == 2
    remember(ids, ["b", "c"], NOW + 1)  # "b" again: not counted twice
    assert ids.count == 3
    assert known(ids, "a", "b", "c", "d") == ["a", "b", "c"]
    assert sum(len(data) for _, data in ids.export()) == 3 * 8


@pytest.mark.parametrize("offset", [0.0, WIDTH / 2, WIDTH - 0.5])
def test_an_id_is_remembered_for_the_horizon_and_forgotten_after_one_more_slice(
    offset: float,
) -> None:
    ids = recent()
    taken_at = NOW + offset  # early, midway and late in its slice
    remember(ids, ["a"], taken_at)
    ids.forget_expired(taken_at + HORIZON)
    assert known(ids, "a") == ["a"] and ids.count == 1
    ids.forget_expired(taken_at + LONGEST)
    assert known(ids, "a") == [] and ids.count == 0
    assert ids.oldest_age(taken_at + LONGEST) == 0.0


def test_an_id_at_a_slice_start_is_kept_until_the_whole_slice_is_past_the_horizon() -> None:
    ids = recent()
    remember(ids, ["a"], NOW)
    ids.forget_expired(NOW + LONGEST - 0.5)  # its slice's end is not yet a horizon ago
    assert known(ids, "a") == ["a"]
    ids.forget_expired(NOW + LONGEST)
    assert known(ids, "a") == []


def test_remember_forgets_expired_slices_and_keeps_the_rest() -> None:
    ids = recent()
    remember(ids, ["old1", "old2"], NOW)
    remember(ids, ["mid"], NOW + HORIZON / 2)
    assert ids.oldest_age(NOW + HORIZON) == HORIZON
    later = NOW + LONGEST
    remember(ids, ["new"], later)  # remember forgets first, as forget_expired does
    assert known(ids, "old1", "old2", "mid", "new") == ["mid", "new"]
    assert ids.count == 2
    assert ids.oldest_age(later) == later - (NOW + HORIZON / 2)
    # Nothing to remember still forgets what expired.
    ids.remember([], later + HORIZON)
    assert known(ids, "mid", "new") == ["new"] and ids.count == 1


def test_an_id_past_the_horizon_is_counted_again_even_after_a_quiet_spell() -> None:
    ids = recent()
    intake = Intake(IntakeQueue(capacity=10), None, lambda: False, ids)
    assert intake.take([given("a")], NOW).duplicates == 0
    # Nothing else arrives; two horizons later the client sends "a" again.
    assert intake.take([given("a")], NOW + 2 * HORIZON).duplicates == 0


def test_max_ids_evicts_the_oldest_first_and_counts_them() -> None:
    ids = recent(max_ids=10)
    remember(ids, ["a0", "a1", "a2", "a3"], NOW)
    remember(ids, ["b0", "b1", "b2", "b3"], NOW + WIDTH)
    now = NOW + 2 * WIDTH
    assert ids.oldest_age(now) == 2 * WIDTH
    remember(ids, ["c0", "c1", "c2", "c3"], now)  # 12 ids: the two first go
    assert (ids.count, ids.evicted) == (10, 2)
    assert known(ids, "a0", "a1", "a2", "a3") == ["a2", "a3"]
    assert ids.oldest_age(now) == 2 * WIDTH  # a2 and a3 still hold the oldest slice
    remember(ids, ["c4", "c5"], now)  # the rest of the oldest slice goes
    assert (ids.count, ids.evicted) == (10, 4)
    assert known(ids, "a2", "a3") == []
    assert ids.oldest_age(now) == WIDTH  # the horizon in effect shrank by a slice
    assert len(known(ids, *(f"b{i}" for i in range(4)), *(f"c{i}" for i in range(6)))) == 10


def test_max_ids_evicts_across_slices_and_within_one_remember() -> None:
    ids = recent(max_ids=3)
    remember(ids, ["a"], NOW)
    remember(ids, ["b"], NOW + WIDTH)
    # Five at once: "a", "b" and the first two of these five go, oldest first.
    remember(ids, ["c0", "c1", "c2", "c3", "c4"], NOW + 2 * WIDTH)
    assert (ids.count, ids.evicted) == (3, 4)
    assert known(ids, "a", "b", "c0", "c1", "c2", "c3", "c4") == ["c2", "c3", "c4"]
    assert ids.oldest_age(NOW + 2 * WIDTH) == 0.0
    assert len(ids.export()) == 1


def test_export_restore_round_trip() -> None:
    ids = recent()
    remember(ids, ["a", "b"], NOW)
    remember(ids, ["c"], NOW + 3 * WIDTH + 7)
    remember(ids, ["d", "e"], NOW + 5 * WIDTH)
    exported = ids.export()
    # The checkpoint's form: each slice's start, and its digests as little-endian u64s.
    assert [start for start, _ in exported] == [NOW, NOW + 3 * WIDTH, NOW + 5 * WIDTH]
    assert exported[0][1] == id_digest("a").to_bytes(8, "little") + id_digest("b").to_bytes(
        8, "little"
    )
    now = NOW + 6 * WIDTH
    back = recent()
    back.restore(exported, now)
    assert back.export() == exported
    assert (back.count, back.evicted) == (5, 0)
    assert back.oldest_age(now) == ids.oldest_age(now)
    assert known(back, "a", "b", "c", "d", "e", "f") == ["a", "b", "c", "d", "e"]


def test_restore_then_remember_keeps_both_and_counts_an_id_once() -> None:
    ids = recent()
    remember(ids, ["a", "b"], NOW)
    back = recent()
    now = NOW + 2 * WIDTH
    back.restore(ids.export(), now)
    remember(back, ["b", "c"], now)  # "b" is known already: only "c" is new
    assert back.count == 3
    assert known(back, "a", "b", "c") == ["a", "b", "c"]
    exported = back.export()
    assert [start for start, _ in exported] == [NOW, now]
    assert exported[1][1] == id_digest("c").to_bytes(8, "little")
    # The restored ones still expire with their own slice.
    back.forget_expired(NOW + LONGEST)
    assert known(back, "a", "b", "c") == ["c"]


def test_restore_before_ids_remembered_since_puts_the_checkpoints_first() -> None:
    ids = recent()
    remember(ids, ["a"], NOW)
    back = recent()
    remember(back, ["z"], NOW + 4 * WIDTH)  # replayed from the journal, say
    back.restore(ids.export(), NOW + 4 * WIDTH)
    assert [start for start, _ in back.export()] == [NOW, NOW + 4 * WIDTH]
    back.forget_expired(NOW + LONGEST)
    assert known(back, "a", "z") == ["z"]


def test_restore_forgets_the_slices_that_expired_meanwhile() -> None:
    ids = recent()
    remember(ids, ["old"], NOW)
    remember(ids, ["young"], NOW + 10 * WIDTH)
    back = recent()
    now = NOW + LONGEST  # the daemon was down this long
    back.restore(ids.export(), now)
    assert known(back, "old", "young") == ["young"]
    assert back.count == 1
    assert [start for start, _ in back.export()] == [NOW + 10 * WIDTH]
    gone = recent()
    gone.restore(ids.export(), NOW + 10 * WIDTH + LONGEST)
    assert (gone.count, gone.export(), gone.oldest_age(NOW + 20 * WIDTH)) == (0, (), 0.0)


def test_restore_into_fewer_max_ids_evicts_the_oldest() -> None:
    ids = recent()
    remember(ids, ["a", "b"], NOW)
    remember(ids, ["c", "d"], NOW + WIDTH)
    back = recent(max_ids=3)
    back.restore(ids.export(), NOW + WIDTH)
    assert (back.count, back.evicted) == (3, 1)
    assert known(back, "a", "b", "c", "d") == ["b", "c", "d"]


def test_remember_events_takes_only_given_ids() -> None:
    ids = recent()
    ids.remember_events([given("g1"), drawn("d1"), given("g2"), given("g1"), drawn("d2")], NOW)
    assert ids.count == 2
    assert known(ids, "g1", "g2", "d1", "d2") == ["g1", "g2"]
    # A drawn id is not remembered even when a later client sends the same string.
    screened = ids.screen([drawn("g1"), given("d1")], NOW)
    assert screened.duplicates == 0
    ids.remember_events([drawn("x"), drawn("y")], NOW)
    assert ids.count == 2


def test_a_clock_stepping_back_loses_no_id() -> None:
    ids = recent()
    remember(ids, ["a"], NOW + 5 * WIDTH)
    back = NOW + 2 * WIDTH  # the clock steps back three slices
    remember(ids, ["b"], back)
    assert known(ids, "a", "b") == ["a", "b"]
    # Filed in the newest slice: the slices stay in order, "b" kept as long as "a".
    starts = [start for start, _ in ids.export()]
    assert starts == sorted(starts) == [NOW + 5 * WIDTH]
    assert ids.oldest_age(back) == 0.0  # never negative
    ids.forget_expired(back + LONGEST)  # a horizon and more after "b", by the stepped clock
    assert known(ids, "a", "b") == ["a", "b"]
    ids.forget_expired(NOW + 5 * WIDTH + LONGEST)
    assert known(ids, "a", "b") == []
    # And forward again: a new slice after the newest.
    later = NOW + 5 * WIDTH + LONGEST + WIDTH
    remember(ids, ["c"], later)
    remember(ids, ["d"], later - 2 * WIDTH)
    assert known(ids, "c", "d") == ["c", "d"] and len(ids.export()) == 1


def test_the_digest_is_stable_across_versions() -> None:
    # Checkpoints hold digests: a new hash function would orphan every stored id.
    assert id_digest("evt-0001") == 0x50BCB2FF54702F08
    assert id_digest("") == 13020603013274838756
    # A lone surrogate (a JSON "\udc80" escape) is encoded, not refused.
    assert id_digest("é\udc80") == 2153106935569139508
    assert id_digest("evt-0001") != id_digest("evt-0002")
    assert all(0 <= id_digest(str(n)) < 1 << 64 for n in range(100))


def test_an_empty_set_reports_nothing() -> None:
    ids = recent()
    assert (ids.count, ids.evicted, ids.oldest_age(NOW), ids.export()) == (0, 0, 0.0, ())
    ids.restore((), NOW)
    ids.forget_expired(NOW)
    assert ids.count == 0 and ids.screen([], NOW).duplicates == 0

"""The small parts of durability: applied progress, the node's state directory, intake."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

from tests.helpers import NOW
from twisted_rta.durability.node_state import claim_node_state
from twisted_rta.durability.progress import AppliedProgress
from twisted_rta.events.model import Event
from twisted_rta.ingest.dedup import RecentIds
from twisted_rta.ingest.intake import Intake, Refused
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.journal.log import JournalFull, JournalWriteError
from twisted_rta.store.interface import NodeIdHeldError


def test_progress_follows_in_order_and_out_of_order_application() -> None:
    progress = AppliedProgress()
    for seq in (1, 2, 4, 5):
        progress.applied(seq)
    assert progress.covers_seq == 2 and progress.beyond == (4, 5)
    assert progress.holds(2) and progress.holds(5) and not progress.holds(3)
    progress.applied(3)
    assert progress.covers_seq == 5 and progress.beyond == ()
    progress.restore(10, (9, 12))
    assert progress.covers_seq == 10 and progress.beyond == (12,)


def test_a_node_directory_is_held_by_one_process_and_default_ids_take_free_slots(
    tmp_path: Path,
) -> None:
    first = claim_node_state(tmp_path, "web:8080", slots=4)
    second = claim_node_state(tmp_path, "web:8080", slots=4)
    assert (first.node_id, second.node_id) == ("web:8080", "web:8080/2")
    assert first.directory != second.directory and first.directory.is_dir()
    with pytest.raises(NodeIdHeldError, match="'web:8080' is already held"):
        claim_node_state(tmp_path, "web:8080", slots=1)
    first.release()
    again = claim_node_state(tmp_path, "web:8080", slots=4)
    assert again.node_id == "web:8080" and again.directory == first.directory


class FakeJournal:
    def __init__(self, *, room: bool = True, error: Exception | None = None) -> None:
        self.room = room
        self.error = error
        self.records: list[Sequence[Event]] = []
        self.waiting: Deferred[None] | None = None

    def room_for(self, events: int) -> bool:
        return self.room

    def append(self, events: Sequence[Event]) -> int:
        if self.error is not None:
            raise self.error
        self.records.append(events)
        return len(self.records)

    def durable(self, seq: int) -> Deferred[None]:
        return self.waiting if self.waiting is not None else succeed(None)


EVENTS = (Event(id="a", type="x", timestamp=NOW), Event(id="b", type="x", timestamp=NOW))


def test_intake_journals_before_it_queues_and_refuses_whole() -> None:
    queue = IntakeQueue(capacity=3)
    journal = FakeJournal()
    intake = Intake(queue, journal, lambda: False)
    assert intake.take(EVENTS, NOW).durable is None
    assert journal.records == [EVENTS] and queue.depth == 2
    with pytest.raises(Refused) as refused:
        intake.take(EVENTS, NOW)  # no room in the queue: not journalled either
    assert refused.value.code == "queue_full" and journal.records == [EVENTS]


@pytest.mark.parametrize(
    ("journal", "code"),
    [
        (FakeJournal(room=False), "journal_full"),
        (FakeJournal(error=JournalFull("full")), "journal_full"),
        (FakeJournal(error=JournalWriteError("ENOSPC")), "journal_unavailable"),
    ],
)
def test_a_journal_that_cannot_take_the_events_refuses_them(
    journal: FakeJournal, code: str
) -> None:
    queue = IntakeQueue(capacity=10)
    with pytest.raises(Refused) as refused:
        Intake(queue, journal, lambda: False).take(EVENTS, NOW)
    assert refused.value.code == code and refused.value.retry_after > 0
    assert queue.depth == 0


def test_under_always_the_answer_waits_for_the_fsync() -> None:
    journal = FakeJournal()
    journal.waiting = Deferred()
    waiting = Intake(IntakeQueue(capacity=10), journal, lambda: False).take(EVENTS, NOW).durable
    assert waiting is journal.waiting and not waiting.called


def test_a_backlogged_store_refuses_before_anything_is_written() -> None:
    journal = FakeJournal()
    with pytest.raises(Refused) as refused:
        Intake(IntakeQueue(capacity=10), journal, lambda: True).take(EVENTS, NOW)
    assert refused.value.code == "store_unavailable" and journal.records == []


GIVEN = (
    Event(id="m1", type="x", timestamp=NOW, id_given=True),
    Event(id="drawn", type="x", timestamp=NOW),
    Event(id="m1", type="x", timestamp=NOW, id_given=True),  # resent within the request
)


def test_resent_events_are_left_out_before_the_journal_and_counted() -> None:
    queue, journal = IntakeQueue(capacity=10), FakeJournal()
    intake = Intake(queue, journal, lambda: False, RecentIds(3600.0, 1000))
    taken = intake.take(GIVEN, NOW)
    assert taken.duplicates == 1 and journal.records == [list(GIVEN[:2])]
    again = intake.take((GIVEN[0], Event(id="drawn", type="x", timestamp=NOW)), NOW + 1)
    # The given id is known now; a drawn id is never checked, even when it repeats.
    assert again.duplicates == 1 and journal.records[-1] == [GIVEN[1]]
    assert queue.depth == 3


def test_a_refused_request_leaves_no_id_behind_so_its_resend_counts() -> None:
    recent = RecentIds(3600.0, 1000)
    journal = FakeJournal(room=False)
    with pytest.raises(Refused):
        Intake(IntakeQueue(capacity=10), journal, lambda: False, recent).take(GIVEN, NOW)
    assert recent.count == 0
    retry = Intake(IntakeQueue(capacity=10), FakeJournal(), lambda: False, recent)
    assert retry.take(GIVEN, NOW).duplicates == 1  # only the copy inside the request


def test_a_request_of_resends_only_takes_nothing_and_needs_no_room() -> None:
    recent = RecentIds(3600.0, 1000)
    Intake(IntakeQueue(capacity=10), FakeJournal(), lambda: False, recent).take(GIVEN[:1], NOW)
    full = Intake(IntakeQueue(capacity=10), FakeJournal(room=False), lambda: False, recent)
    taken = full.take(GIVEN[:1], NOW)
    assert (taken.durable, taken.duplicates) == (None, 1)

"""Intake: the one place that decides whether accepted events can be taken, and takes them.

Taking means, in this order: room in the queue, room in the journal, the journal record
written (to the OS, or fsynced under ``journal.fsync: always``), then the queue. Only then
may the HTTP layer answer 202, so a 202 always names events that will be aggregated, even
across a kill -9. A refusal takes nothing.

Before all of it, events whose client-given id this node already took within the dedup
horizon are left out (ingest/dedup.py): they are acknowledged with the rest, never journalled
or counted again. Their ids are remembered only once the events are taken, so a refused
request may be resent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import frozen
from twisted.internet.defer import Deferred

from twisted_rta.events.model import Event
from twisted_rta.ingest.dedup import RecentIds
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.journal.log import JournalFull, JournalWriteError

QUEUE_RETRY_AFTER = 1  # seconds
STORE_RETRY_AFTER = 5


class Refused(Exception):
    """Nothing of the request was taken; ``code`` and ``message`` say why (a 503)."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class EventJournal(Protocol):
    """What intake needs of the journal (twisted_rta.journal.log.Journal)."""

    def room_for(self, events: int) -> bool: ...
    def append(self, events: Sequence[Event]) -> int: ...
    def durable(self, seq: int) -> Deferred[None]: ...


@frozen
class Taken:
    """What ``take`` did: ``durable`` fires when the 202 may be sent (None: it may be now);
    ``duplicates`` events were resends, left out."""

    durable: Deferred[None] | None
    duplicates: int = 0


_TAKEN = Taken(None)


@frozen
class Intake:
    queue: IntakeQueue
    journal: EventJournal | None
    store_backlogged: Callable[[], bool]
    recent_ids: RecentIds | None = None  # None: dedup.enabled is false

    def refusal(self, count: int) -> Refused | None:
        """Why ``count`` events could not be taken now, or None: the checks of ``take``
        that need only a count, so a request can be refused before its body is decoded."""
        if self.store_backlogged():
            return Refused(
                "store_unavailable",
                "the window store is failing and too many closed windows wait for it; "
                "nothing of this request was accepted, retry later",
                STORE_RETRY_AFTER,
            )
        queue = self.queue
        if not queue.has_room(count):
            if queue.closed:
                return Refused(
                    "shutting_down",
                    "the daemon is shutting down; retry on another node or after it restarts",
                    QUEUE_RETRY_AFTER,
                )
            return Refused(
                "queue_full",
                f"intake queue is full ({queue.depth} of {queue.capacity} events waiting); "
                "nothing of this request was accepted, retry later",
                QUEUE_RETRY_AFTER,
            )
        if self.journal is not None and not self.journal.room_for(count):
            return _journal_full()
        return None

    def take(self, events: Sequence[Event], now: float) -> Taken:
        """Take ``events`` (those not resent) whole at ``now``, or raise Refused."""
        recent = self.recent_ids
        if recent is None or not any(event.id_given for event in events):
            # Most requests: nothing to screen (and under fsync "interval", nothing to wait
            # for: the one answer is shared rather than made per request).
            durable = self._take(events)
            return _TAKEN if durable is None else Taken(durable)
        screened = recent.screen(events, now)
        durable = self._take(screened.events)
        recent.remember(screened.digests, now)
        return Taken(durable, screened.duplicates)

    def _take(self, events: Sequence[Event]) -> Deferred[None] | None:
        """A Deferred when the 202 must wait for the journal's fsync, None when the events
        are taken already."""
        if not events:
            return None
        refused = self.refusal(len(events))
        if refused is not None:
            raise refused
        queue = self.queue
        journal = self.journal
        if journal is None:
            queue.offer(events)
            return None
        try:
            seq = journal.append(events)
        except JournalFull:
            raise _journal_full() from None
        except JournalWriteError as error:
            raise Refused(
                "journal_unavailable",
                f"the journal could not record the events ({error}); nothing of this request "
                "was accepted, retry later",
                STORE_RETRY_AFTER,
            ) from None
        queue.offer(events, seq)  # room was checked in this same reactor turn
        durable = journal.durable(seq)
        return None if durable.called else durable


def _journal_full() -> Refused:
    return Refused(
        "journal_full",
        "the journal holds as many events as journal.max_bytes allows while the store catches "
        "up; nothing of this request was accepted, retry later",
        STORE_RETRY_AFTER,
    )

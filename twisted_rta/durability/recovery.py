"""Recovery at start: the last checkpoint, then every journal record it does not hold.

Runs once, synchronously, before the daemon serves. The aggregator comes out holding every
event answered 202 that the store does not hold yet, once: records the checkpoint holds
(``covers_seq`` and ``applied_beyond``) are skipped, the rest applied in journal order.
The recent event ids come back the same way: the checkpoint's, then those of every record
replayed (remembered as of now, so a little longer than the horizon asked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from attrs import frozen
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.state import restore_aggregator, restore_closed
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.checkpoint.codec import Checkpoint
from twisted_rta.durability.progress import AppliedProgress
from twisted_rta.events.model import Event
from twisted_rta.ingest.dedup import RecentIds

log = Logger()


@frozen
class Recovered:
    """What a start recovered: the checkpoint's mark (0 without one), the closed windows it
    still held for the store (with their tags), and how much journal was replayed."""

    from_checkpoint: bool
    mark: int
    pending: tuple[tuple[int, ClosedWindow], ...]
    records_replayed: int
    events_replayed: int


def recover(
    aggregator: Aggregator,
    progress: AppliedProgress,
    checkpoint: Checkpoint | None,
    replay: Callable[[int], Iterable[tuple[int, tuple[Event, ...]]]],
    now: float,
    recent_ids: RecentIds | None = None,
) -> Recovered:
    """Load ``checkpoint`` into the fresh ``aggregator`` (and ``recent_ids``), then apply
    every journal record ``replay(after_seq)`` yields that the checkpoint does not hold."""
    pending: tuple[tuple[int, ClosedWindow], ...] = ()
    mark = 0
    if checkpoint is not None:
        restore_aggregator(aggregator, checkpoint.aggregator)
        progress.restore(checkpoint.covers_seq, checkpoint.applied_beyond)
        windows = restore_closed([state for _, state in checkpoint.pending])
        pending = tuple(zip((tag for tag, _ in checkpoint.pending), windows, strict=True))
        mark = checkpoint.mark
        if recent_ids is not None:
            recent_ids.restore(checkpoint.recent_ids, now)
    records = events = 0
    for seq, batch in replay(progress.covers_seq):
        if progress.holds(seq):
            continue
        aggregator.add_many(batch, now)
        if recent_ids is not None:
            recent_ids.remember_events(batch, now)
        progress.applied(seq)
        records += 1
        events += len(batch)
    return Recovered(checkpoint is not None, mark, pending, records, events)

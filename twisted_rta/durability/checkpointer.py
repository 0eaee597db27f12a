"""Checkpointer: each flush, the aggregator and its unstored windows saved with the journal
position they hold, before the store is written.

The order is what makes a crash at any instant harmless: (1) the checkpoint, tagging every
unstored closed window with the checkpoint's mark when it is first included; (2) one store
transaction with those windows, this node's totals, its publication and the mark, in which
the store skips windows whose tag it already holds; (3) once the store holds a checkpoint's
windows, the journal records the checkpoint before it covers are deleted. A restart loads the
newest checkpoint and replays the journal after it; a window it sends again is skipped by tag.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.state import export_aggregator, export_closed
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.checkpoint.codec import Checkpoint, encode_checkpoint_and_publication
from twisted_rta.checkpoint.files import CheckpointFiles
from twisted_rta.durability.progress import AppliedProgress
from twisted_rta.ingest.dedup import RecentIds
from twisted_rta.journal.log import Journal

Tagged = tuple[int, ClosedWindow]  # (tag, window): tag 0 until a checkpoint holds it


@frozen
class FlushPlan:
    """What one checkpoint lets the flush write: its mark, and this node's publication."""

    mark: int
    covers_seq: int
    publication: bytes
    taken_at: float


@define
class Checkpointer:
    aggregator: Aggregator
    progress: AppliedProgress
    files: CheckpointFiles
    journal: Journal
    node_id: str
    clock: IReactorTime
    recent_ids: RecentIds | None = None  # kept in the checkpoint, not the publication
    mark: int = 0
    last_checkpoint_at: float | None = None
    # covers_seq of the last two checkpoints the store has taken: the journal is released
    # through the older, so the previous checkpoint stays usable if the newest is damaged.
    _committed: deque[int] = field(factory=lambda: deque(maxlen=2))

    async def take(self, pending: Sequence[Tagged]) -> tuple[FlushPlan, list[Tagged]]:
        """Checkpoint now; returns the plan and ``pending`` with every untagged window
        tagged with this checkpoint's mark."""
        mark = self.mark + 1
        tagged = [(tag or mark, window) for tag, window in pending]
        now = self.clock.seconds()
        closed = export_closed([window for _, window in tagged])
        checkpoint = Checkpoint(
            mark=mark,
            covers_seq=self.progress.covers_seq,
            applied_beyond=self.progress.beyond,
            node_id=self.node_id,
            taken_at=now,
            aggregator=export_aggregator(self.aggregator),
            pending=tuple((tag, state) for (tag, _), state in zip(tagged, closed, strict=True)),
            recent_ids=self.recent_ids.export() if self.recent_ids is not None else (),
        )
        data, publication = encode_checkpoint_and_publication(checkpoint)
        await self.files.save(data, mark)
        self.mark = mark
        self.last_checkpoint_at = now
        # The checkpoint (less the recent ids) is also this node's publication: another
        # node restores it into a scratch aggregator and asks that for live windows
        # (cheaper here than exporting merged live windows every flush; the reader caches
        # it per publication).
        return FlushPlan(mark, checkpoint.covers_seq, publication, now), tagged

    def stored(self, plan: FlushPlan) -> None:
        """The store holds what checkpoint ``plan.mark`` held for it: release the journal."""
        self._committed.append(plan.covers_seq)
        if len(self._committed) == 2:
            self.journal.release_through(self._committed[0])

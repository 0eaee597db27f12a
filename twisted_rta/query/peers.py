"""Other nodes' live windows, from the publications they write to the shared store.

Every flush each node publishes its checkpoint; a reader restores it into a scratch
aggregator (once per publication, cached) and asks that aggregator for live windows, exactly
as the publishing node would answer for itself. Publications are re-read at most once per
``refresh`` seconds: they change once per flush interval anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.state import IncompatibleState, restore_aggregator
from twisted_rta.checkpoint.codec import CorruptCheckpoint, decode_checkpoint
from twisted_rta.store.interface import Publication

log = Logger()


@define
class PeerWindows:
    read: Callable[[], Awaitable[Sequence[Publication]]]  # every other node's publication
    scratch_aggregator: Callable[[], Aggregator]
    clock: IReactorTime
    refresh: float = 1.0
    _peers: dict[str, tuple[float, Aggregator | None]] = field(factory=dict)
    _read_at: float | None = None

    async def live_windows(
        self,
        size: float,
        start_from: float,
        start_to: float,
        *,
        names: Collection[str] | None = None,
    ) -> list[dict[float, dict[str, Metric]]]:
        """Each other node's live windows of ``size`` starting in [start_from, start_to),
        only the metrics in ``names`` when given; the metrics are copies the caller owns."""
        await self._refresh()
        return [
            aggregator.live_windows(size, start_from, start_to, names=names)
            for _, aggregator in self._peers.values()
            if aggregator is not None
        ]

    async def _refresh(self) -> None:
        now = self.clock.seconds()
        if self._read_at is not None and now - self._read_at < self.refresh:
            return
        publications = await self.read()
        self._read_at = now
        current = {publication.node_id for publication in publications}
        for node_id in list(self._peers):
            if node_id not in current:
                del self._peers[node_id]
        for publication in publications:
            known = self._peers.get(publication.node_id)
            if known is None or known[0] != publication.published_at:
                self._peers[publication.node_id] = (
                    publication.published_at,
                    self._restore(publication),
                )

    def _restore(self, publication: Publication) -> Aggregator | None:
        try:
            checkpoint = decode_checkpoint(publication.payload)
            aggregator = self.scratch_aggregator()
            restore_aggregator(aggregator, checkpoint.aggregator)
        except (CorruptCheckpoint, IncompatibleState, ValueError) as error:
            log.warn(
                "ignoring the publication of node {node_id}: {error}",
                node_id=publication.node_id,
                error=str(error),
            )
            return None
        return aggregator

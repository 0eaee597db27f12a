"""Which journal records the aggregator holds: a watermark plus the few applied past it.

Workers apply queued requests whole and, normally, in journal order; a checkpoint records
``covers_seq`` (every record up to it is applied) and ``beyond`` (records past it that are
applied too, when two workers finished out of order). Replay applies exactly the rest.
"""

from __future__ import annotations

from attrs import define, field


@define
class AppliedProgress:
    covers_seq: int = 0
    _beyond: set[int] = field(factory=set)

    def applied(self, seq: int) -> None:
        """Record that journal record ``seq`` is in the aggregator."""
        if seq == self.covers_seq + 1:
            self.covers_seq = seq
            beyond = self._beyond
            while beyond and self.covers_seq + 1 in beyond:
                self.covers_seq += 1
                beyond.discard(self.covers_seq)
        elif seq > self.covers_seq:
            self._beyond.add(seq)

    @property
    def beyond(self) -> tuple[int, ...]:
        return tuple(sorted(self._beyond))

    def holds(self, seq: int) -> bool:
        return seq <= self.covers_seq or seq in self._beyond

    def restore(self, covers_seq: int, beyond: tuple[int, ...]) -> None:
        self.covers_seq = covers_seq
        self._beyond = {seq for seq in beyond if seq > covers_seq}

"""WindowStore: where closed windows and all-time totals are kept, and read back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from attrs import frozen
from twisted.internet.defer import Deferred

from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.windows import ClosedWindow

TOTALS_RESOLUTION = 0  # rows of all-time totals use resolution 0 and window_start 0


@frozen
class StoredMetric:
    """One stored row: a metric's state for one window (or the totals) of one node."""

    metric: str
    resolution: int
    window_start: int
    node_id: str
    value: Metric


class PermanentStoreError(Exception):
    """Opening the store failed in a way that waiting will not fix (wrong credentials, no
    such database, missing privileges, node id in use): the start fails, no retry."""


class SchemaTooNewError(PermanentStoreError):
    """The database was migrated by a newer twisted-rta; refusing to touch it."""


class NodeIdHeldError(PermanentStoreError):
    """Another live process holds the lease on this node id in the same store."""


class WindowStore(Protocol):
    node_id: str

    def open(self) -> Deferred[None]:
        """Take the node-id lease, connect and apply migrations; may be retried after a
        failure unless it fails with PermanentStoreError. ``node_id`` is final once open."""

    def load_totals(self) -> Deferred[dict[str, Metric]]:
        """This node's all-time totals."""

    def write(
        self, windows: Sequence[ClosedWindow], totals: Mapping[str, Metric]
    ) -> Deferred[None]:
        """One transaction: merge each window's metrics into its rows, overwrite totals."""

    def read_windows(
        self,
        resolution: int,
        start_from: float,
        start_to: float,
        *,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> Deferred[list[StoredMetric]]:
        """Rows of every node with ``start_from <= window_start < start_to``."""

    def read_totals(
        self,
        *,
        exclude_node: str | None,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> Deferred[list[StoredMetric]]:
        """All-time rows of every node but ``exclude_node``."""

    def delete_expired(self, resolution: int, before: float, batch_size: int) -> Deferred[int]:
        """Delete windows of ``resolution`` starting before ``before``; return the count."""

    def check(self) -> Deferred[None]:
        """Fails when the store cannot answer."""

    def close(self) -> Deferred[None]:
        """Release connections; nothing is written after this."""

"""WindowStore: where closed windows, all-time totals, each node's committed checkpoint mark
and each node's publication of its live windows are kept, and read back."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from attrs import frozen
from twisted.internet.defer import Deferred

from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.windows import ClosedWindow

TOTALS_RESOLUTION = 0  # rows of all-time totals use resolution 0 and window_start 0
MAX_MARK = 2**63 - 1  # marks and tags are stored as BIGINT


@frozen
class StoredMetric:
    """One stored row: a metric's state for one window (or the totals) of one node."""

    metric: str
    resolution: int
    window_start: int
    node_id: str
    value: Metric


@frozen
class FlushBatch:
    """Everything one flush writes, in one transaction (``WindowStore.write``).

    ``windows`` are ``(tag, window)``: the tag is the mark of the first local checkpoint
    that contained the window. With a ``mark``, a window whose tag is at most the mark this
    node already committed was stored by an earlier transaction (a replay after a crash or
    an ambiguous commit) and is skipped; every tag must then lie in ``1..mark``. With
    ``mark`` None (no journal) tags are ignored and every window is merged.
    """

    # Merged into this node's rows (a late delta merges into its stored window).
    windows: Sequence[tuple[int, ClosedWindow]]
    # This node's all-time state of these metrics: overwrites the stored rows. The live
    # metrics: ``write`` serialises or copies them before it returns.
    totals: Mapping[str, Metric]
    # The local checkpoint this batch comes from; None: no journal, no mark kept.
    mark: int | None
    # This node's live-window blob, replacing its previous one; None deletes it (a clean
    # shutdown: everything is in the rows).
    publication: bytes | None
    # Clock time of the state in ``publication``.
    published_at: float

    def check(self) -> None:
        """Raise ValueError when the batch cannot be stored as it says (nothing is written)."""
        if not math.isfinite(self.published_at):
            raise ValueError(f"published_at must be a finite time, got {self.published_at!r}")
        if self.mark is None:
            return
        if not 0 <= self.mark <= MAX_MARK:
            raise ValueError(f"mark must be in 0..{MAX_MARK}, got {self.mark}")
        for tag, window in self.windows:
            # A tag outside 1..mark would be skipped (lost) or never skipped (doubled).
            if not 1 <= tag <= self.mark:
                raise ValueError(
                    f"window {window.resolution}s@{window.start} has tag {tag}, "
                    f"outside 1..{self.mark} (the batch's mark)"
                )


def salt_periods(period_starts: Sequence[int], now: float) -> list[int]:
    """``period_starts`` sorted without repeats, checked for ``WindowStore.visitor_salts``:
    ValueError unless each is an integer BIGINT holds and ``now`` is a finite time."""
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, got {now!r}")
    periods: set[int] = set()
    for period in period_starts:
        try:
            start = operator.index(period)
        except TypeError:
            raise ValueError(f"a salt period start must be an integer, got {period!r}") from None
        if not -(2**63) <= start < 2**63:  # the column is BIGINT
            raise ValueError(f"salt period start {start} does not fit a BIGINT")
        periods.add(start)
    return sorted(periods)


def checked_salt(salt: bytes) -> bytes:
    """``salt`` (from ``new_salt()``) as bytes; ValueError when it is empty or not bytes."""
    if not isinstance(salt, bytes | bytearray | memoryview):
        raise ValueError(f"new_salt() must return bytes, got {type(salt).__name__}")
    if not salt:
        raise ValueError("new_salt() returned an empty salt")
    return bytes(salt)


@frozen
class Publication:
    """One node's live windows as it last published them (an opaque blob to the store)."""

    node_id: str
    published_at: float
    payload: bytes


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

    def write(self, batch: FlushBatch) -> Deferred[int]:
        """ONE transaction, serialised with this node's other writes: read this node's
        committed mark (locked), merge every window whose tag is above it (all of them when
        ``batch.mark`` is None), overwrite the totals, replace (or delete) this node's
        publication and store ``batch.mark`` unless the committed mark is higher (a mark
        never goes down). Return how many windows were merged; the rest were stored
        already. On failure nothing is written and the same batch may be sent again; an
        invalid batch (``FlushBatch.check``) fails with ValueError. ``batch.totals`` are the
        live metrics: serialise or copy them before returning, they keep changing after."""

    def read_mark(self) -> Deferred[int]:
        """This node's committed mark; 0 when it never committed one."""

    def read_publications(self, *, exclude_node: str) -> Deferred[list[Publication]]:
        """The publication of every node but ``exclude_node``, ordered by node id."""

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

    def visitor_salts(
        self, period_starts: Sequence[int], new_salt: Callable[[], bytes], now: float
    ) -> Deferred[dict[int, bytes]]:
        """The secret salt of each rotation period in ``period_starts`` (epoch seconds of
        the period's start), shared by every node of the store.

        A period without a salt first gets ``new_salt()`` stored, created at ``now``, unless
        another node stored one meanwhile: the first stored salt of a period wins and is
        never replaced, so every node answers the same salt for it. ``new_salt`` is called
        (on the reactor thread) only for periods that had none when read. Fails with
        ValueError, storing nothing, for a period start that is not an integer within
        BIGINT, a non-finite ``now`` or a ``new_salt()`` that is empty or not bytes.
        """

    def delete_visitor_salts(self, before: int) -> Deferred[int]:
        """Delete the salts of periods starting before ``before``; return how many."""

    def check(self) -> Deferred[None]:
        """Fails when the store cannot answer."""

    def close(self) -> Deferred[None]:
        """Release connections; nothing is written after this."""

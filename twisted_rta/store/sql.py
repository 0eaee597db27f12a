"""SQLWindowStore: closed windows, all-time totals, node marks, publications and visitor salts
in SQLite or PostgreSQL, via adbapi."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from attrs import define, field, frozen
from twisted.enterprise.adbapi import ConnectionPool
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from twisted_rta.aggregation.metrics import Metric, metric_from_bytes
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.store.dialects import ConnectionSettings, settings_from_url
from twisted_rta.store.interface import (
    TOTALS_RESOLUTION,
    FlushBatch,
    PermanentStoreError,
    Publication,
    SchemaTooNewError,
    StoredMetric,
    checked_salt,
    salt_periods,
)
from twisted_rta.store.lease import Lease, acquire_node_id, lock_key, node_id_candidates
from twisted_rta.store.migrations import MIGRATIONS, migrate

log = Logger()

__all__ = [
    "SQLWindowStore",
    "SchemaTooNewError",
    "StoreClosedError",
    "StoreNotOpenError",
    "StoredMetric",
]

_T = TypeVar("_T")

_BIGINT_MIN = -(2**63)
_BIGINT_MAX = 2**63 - 1

_SELECT = "SELECT metric, resolution, window_start, node_id, kind, state FROM rta_metric_windows"
_SELECT_NODE_WINDOW = (
    "SELECT metric, kind, state FROM rta_metric_windows"
    " WHERE resolution = ? AND window_start = ? AND node_id = ?"
)
_UPSERT = (
    "INSERT INTO rta_metric_windows"
    " (metric, resolution, window_start, node_id, kind, state, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (metric, resolution, window_start, node_id)"
    " DO UPDATE SET kind = excluded.kind, state = excluded.state,"
    " updated_at = excluded.updated_at"
)
# Read inside the write transaction, locked (Dialect.for_update) until the commit.
_SELECT_MARK = "SELECT mark FROM rta_node_marks WHERE node_id = ?"
# The WHERE keeps a mark from going down even if a caller skipped the check in Python.
_UPSERT_MARK = (
    "INSERT INTO rta_node_marks (node_id, mark) VALUES (?, ?)"
    " ON CONFLICT (node_id) DO UPDATE SET mark = excluded.mark"
    " WHERE excluded.mark > rta_node_marks.mark"
)
_UPSERT_PUBLICATION = (
    "INSERT INTO rta_publications (node_id, published_at, payload) VALUES (?, ?, ?)"
    " ON CONFLICT (node_id) DO UPDATE SET published_at = excluded.published_at,"
    " payload = excluded.payload"
)
_DELETE_PUBLICATION = "DELETE FROM rta_publications WHERE node_id = ?"
_SELECT_PUBLICATIONS = (
    "SELECT node_id, published_at, payload FROM rta_publications"
    " WHERE node_id <> ? ORDER BY node_id"
)
# The row-value IN keeps one statement shape for both dialects (neither allows
# DELETE ... LIMIT portably) and matches the primary key.
_DELETE_BATCH = (
    "DELETE FROM rta_metric_windows WHERE (metric, resolution, window_start, node_id) IN ("
    "SELECT metric, resolution, window_start, node_id FROM rta_metric_windows"
    " WHERE resolution = ? AND window_start < ? LIMIT ?)"
)

_SELECT_SALTS = "SELECT period_start, salt FROM rta_visitor_salts WHERE period_start IN ({})"
# Stores a period's salt only if it has none: the first salt stored wins and is never
# replaced. The same statement on both dialects (SQLite takes ON CONFLICT since 3.24, as
# the upserts above); not SQLite's INSERT OR IGNORE, which would also skip, rather than
# fail, a row breaking NOT NULL and leave the period without a salt.
_INSERT_SALT = (
    "INSERT INTO rta_visitor_salts (period_start, salt, created_at) VALUES (?, ?, ?)"
    " ON CONFLICT (period_start) DO NOTHING"
)
_DELETE_SALTS = "DELETE FROM rta_visitor_salts WHERE period_start < ?"
# Serialises storing salts with deleting them across nodes (PostgreSQL's advisory lock;
# SQLite's write lock does it already): a salt that an insert found stored cannot be
# deleted before the same transaction reads it back.
_SALTS_LOCK = lock_key("twisted-rta:visitor-salts")


class StoreClosedError(RuntimeError):
    """The store was closed; nothing more can be read or written."""


class StoreNotOpenError(RuntimeError):
    """``open()`` has not succeeded yet, so the schema is not known to be current."""


@frozen
class _Tagged:
    """A window checked on the reactor thread, to be merged in the pool if its tag is new."""

    tag: int
    key: tuple[int, int]  # resolution, window_start
    metrics: Mapping[str, Metric]


@frozen
class _Write:
    """A FlushBatch checked and serialised (all but the window metrics) for ``_write_txn``."""

    windows: Sequence[_Tagged]
    totals: Sequence[tuple[str, str, bytes]]
    mark: int | None
    publication: bytes | None
    published_at: float


@frozen
class _Conflict:
    """A stored row whose kind differs from the new data (the metric changed kind)."""

    metric: str
    resolution: int
    window_start: int
    stored_kind: str
    new_kind: str


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (code point order).

    None when there is none (the prefix is all U+10FFFF): ``metric >= prefix`` suffices then.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            # Surrogates cannot be stored as UTF-8; the next storable code point sorts next.
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _int_bound(value: float) -> int:
    """The integer ``n`` with ``window_start >= value`` iff ``window_start >= n``.

    Comparing BIGINT with a float parameter would stop PostgreSQL from using the index.
    """
    if math.isnan(value):
        raise ValueError("time bound must not be NaN")
    if value <= _BIGINT_MIN:
        return _BIGINT_MIN
    if value >= _BIGINT_MAX:
        return _BIGINT_MAX
    return math.ceil(value)


def _name_filter(
    names: Sequence[str] | None, prefix: str | None
) -> tuple[list[str], list[Any]] | None:
    """SQL conditions and parameters for the name filters; None when nothing can match."""
    conditions: list[str] = []
    params: list[Any] = []
    if names is not None:
        unique = sorted(set(names))
        if not unique:
            return None
        conditions.append(f"metric IN ({', '.join('?' * len(unique))})")
        params.extend(unique)
    if prefix:
        # A range, not LIKE: an index can serve it and '%' or '_' in names mean nothing.
        conditions.append("metric >= ?")
        params.append(prefix)
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            conditions.append("metric < ?")
            params.append(upper)
    return conditions, params


def _window_key(window: ClosedWindow) -> tuple[int, int]:
    resolution = window.resolution
    # Resolution 0 holds the totals, and the column is whole seconds.
    if resolution < 1 or resolution != int(resolution):
        raise ValueError(f"window resolution must be whole seconds >= 1, got {resolution!r}")
    return int(resolution), int(window.start)


def _prepare(batch: FlushBatch) -> _Write:
    """``batch`` checked (ValueError) and serialised, but for the window metrics."""
    batch.check()
    return _Write(
        windows=[
            _Tagged(tag, _window_key(window), window.metrics) for tag, window in batch.windows
        ],
        totals=[(name, metric.kind, metric.to_bytes()) for name, metric in batch.totals.items()],
        mark=batch.mark,
        publication=None if batch.publication is None else bytes(batch.publication),
        published_at=float(batch.published_at),
    )


def _group(windows: Sequence[_Tagged]) -> dict[tuple[int, int], dict[str, list[Metric]]]:
    # The same window may come twice in one batch (a close and its late delta).
    groups: dict[tuple[int, int], dict[str, list[Metric]]] = {}
    for window in windows:
        by_name = groups.setdefault(window.key, {})
        for name, metric in window.metrics.items():
            by_name.setdefault(name, []).append(metric)
    return groups


def _merged(stored: tuple[str, bytes] | None, deltas: Sequence[Metric]) -> Metric:
    """The stored state (if its kind matches) with ``deltas`` merged in; never mutates them."""
    first = deltas[0]
    if stored is not None and stored[0] == first.kind:
        base = metric_from_bytes(stored[0], bytes(stored[1]))
        rest = deltas
    elif len(deltas) == 1:
        return first
    else:
        base = first.copy()
        rest = deltas[1:]
    for delta in rest:
        base.merge(delta)  # type: ignore[arg-type]
    return base


def _decode(rows: Sequence[Sequence[Any]]) -> list[StoredMetric]:
    return [
        StoredMetric(
            metric,
            int(resolution),
            int(window_start),
            node_id,
            metric_from_bytes(kind, bytes(state)),
        )
        for metric, resolution, window_start, node_id, kind, state in rows
    ]


@define
class SQLWindowStore:
    """Persists closed windows (merged per node) and each node's all-time totals.

    Every method returns a Deferred and does its SQL in the adbapi thread pool. Rows are
    keyed by node, so several daemons can share one database; ``open()`` takes a lease on
    the node id (lease.py) so that no two live processes write as the same node. With
    several candidate ids (the default id's slots), ``node_id`` is the one leased at open.
    """

    _pool: ConnectionPool
    _settings: ConnectionSettings
    _reactor: Any
    _candidates: tuple[str, ...]
    _lease: Lease
    node_id: str = field(init=False)
    _leased: bool = False
    _opened: bool = False
    _closed: bool = False
    _pool_closed: bool = False
    # Operations in the pool: close() waits for them so joining its threads never blocks.
    _running: int = 0
    _close_waiters: list[Deferred[None]] = field(factory=list)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        reactor: Any,
        node_id: str,
        max_connections: int = 4,
        node_id_slots: int = 1,
    ) -> Self:
        """A store for ``sqlite:///path``, ``sqlite:relative/path`` or ``postgresql://...``.

        ``node_id_slots`` > 1 lets ``open()`` fall back to ``node_id/2``, ``node_id/3``, ...
        when another process holds ``node_id`` (default ids); 1 means exactly ``node_id``.
        Nothing connects before ``open()``. Raises ValueError for a bad URL and its subclass
        MissingDriverError when the database's driver is not installed.
        """
        if not node_id:
            raise ValueError("node_id must not be empty")
        candidates = node_id_candidates(node_id, node_id_slots)
        settings = settings_from_url(url, max_connections=max_connections)
        pool = ConnectionPool(
            settings.dbapi_module,
            *settings.connect_args,
            cp_min=settings.min_connections,
            cp_max=settings.max_connections,
            cp_reactor=reactor,
            cp_openfun=settings.on_connect,
            # Replaces a connection that died (database restart) instead of failing forever.
            cp_reconnect=True,
            **settings.connect_kwargs,
        )
        return cls(pool, settings, reactor, candidates, settings.make_lease())

    def __attrs_post_init__(self) -> None:
        self.node_id = self._candidates[0]

    @property
    def database(self) -> str:
        """The database, for logs and errors (no credentials)."""
        return self._settings.description

    def open(self) -> Deferred[None]:
        """Connect and apply missing migrations; may be called again after a failure."""
        return Deferred.fromCoroutine(self._open())

    def load_totals(self) -> Deferred[dict[str, Metric]]:
        """This node's all-time totals."""
        return self._run(self._load_totals_txn)

    def write(self, batch: FlushBatch) -> Deferred[int]:
        """Store ``batch`` in one transaction; return how many of its windows were merged.

        The transaction holds this node's write lock (the per-node advisory lock on
        PostgreSQL, the database write lock on SQLite) from its first statement, reads this
        node's committed mark (FOR UPDATE on PostgreSQL), merges the windows tagged above it
        (all when ``batch.mark`` is None), overwrites the totals, replaces or deletes this
        node's publication and raises the mark to ``batch.mark`` (never lowers it; a None
        mark leaves it alone). Only this node, holding its lease, writes its mark, rows and
        publication. On failure nothing is written and the caller may send the same batch
        again: windows a commit that looked failed did store are skipped by their tags.
        ``totals`` are serialised before this returns, so the caller may keep updating them;
        window metrics are read in the pool and must not change meanwhile.
        """
        try:
            prepared = _prepare(batch)
        except ValueError as e:
            return fail(e)
        d = self._run(self._write_txn, prepared, self._reactor.seconds())
        return d.addCallback(self._written)

    def read_mark(self) -> Deferred[int]:
        """This node's committed mark; 0 when it never committed one."""
        return self._run(self._read_mark_txn)

    def read_publications(self, *, exclude_node: str) -> Deferred[list[Publication]]:
        """Every node's publication but ``exclude_node``'s, ordered by node id."""
        return self._run(self._read_publications_txn, exclude_node)

    def read_windows(
        self,
        resolution: int,
        start_from: float,
        start_to: float,
        *,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> Deferred[list[StoredMetric]]:
        """Every node's rows of ``resolution`` with ``start_from <= window_start < start_to``."""
        try:
            conditions = ["resolution = ?", "window_start >= ?", "window_start < ?"]
            params: list[Any] = [int(resolution), _int_bound(start_from), _int_bound(start_to)]
        except ValueError as e:
            return fail(e)
        return self._select(conditions, params, names, prefix)

    def read_totals(
        self,
        *,
        exclude_node: str | None,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> Deferred[list[StoredMetric]]:
        """The all-time totals of every node but ``exclude_node``."""
        conditions = ["resolution = ?", "window_start = 0"]
        params: list[Any] = [TOTALS_RESOLUTION]
        if exclude_node is not None:
            conditions.append("node_id <> ?")
            params.append(exclude_node)
        return self._select(conditions, params, names, prefix)

    def delete_expired(self, resolution: int, before: float, batch_size: int) -> Deferred[int]:
        """Delete rows of ``resolution`` with ``window_start < before``, one transaction per
        ``batch_size`` rows so no lock is held for long; return how many were deleted."""
        return Deferred.fromCoroutine(self._delete_expired(resolution, before, batch_size))

    def visitor_salts(
        self, period_starts: Sequence[int], new_salt: Callable[[], bytes], now: float
    ) -> Deferred[dict[int, bytes]]:
        """The salt of each period in ``period_starts``, storing one where there is none.

        A first transaction reads the stored salts; that is all when every period has one.
        Otherwise ``new_salt()`` is called on the reactor thread for each period without,
        and a second transaction, holding the salts' lock (the advisory lock on PostgreSQL,
        the database write lock on SQLite), inserts each unless the period has a salt by
        then (another node's, which wins) and reads them back. Nodes racing to salt a new
        period thus all answer the salt that was stored first.
        """
        try:
            periods = salt_periods(period_starts, now)
        except ValueError as e:
            return fail(e)
        return Deferred.fromCoroutine(self._visitor_salts(periods, new_salt, float(now)))

    def delete_visitor_salts(self, before: int) -> Deferred[int]:
        """Delete the salts of periods starting before ``before`` (one transaction, holding
        the salts' lock: there are a few rows); return how many were deleted."""
        try:
            # period_start < before iff period_start < this integer, which keeps PostgreSQL
            # comparing BIGINT with BIGINT (the primary key serves the range).
            bound = _int_bound(before)
        except ValueError as e:
            return fail(e)
        return self._run(self._delete_salts_txn, bound)

    def check(self) -> Deferred[None]:
        """Fails unless the store is open and the database answers."""
        return self._run(self._check_txn)

    def close(self) -> Deferred[None]:
        """Wait for running operations, then close every connection; idempotent."""
        if self._pool_closed:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._close_waiters.append(done)
        if not self._closed:
            self._closed = True
            self._close_when_idle()
        return done

    # -- plumbing (reactor thread) --

    def _usable(self, *, require_open: bool) -> None:
        # A joined thread pool (reactor shutdown) silently drops work: fail instead of hanging.
        if self._closed or self._pool.threadpool.joined:
            raise StoreClosedError(f"window store {self.database} is closed")
        if require_open and not self._opened:
            raise StoreNotOpenError(f"window store {self.database} is not open")

    def _track(self, d: Deferred[_T]) -> Deferred[_T]:
        self._running += 1

        def finished(result: Any) -> Any:
            self._running -= 1
            if self._closed and not self._running:
                self._close_when_idle()
            return result

        return d.addBoth(finished)

    def _run(self, interaction: Callable[..., _T], *args: Any) -> Deferred[_T]:
        try:
            self._usable(require_open=True)
        except (StoreClosedError, StoreNotOpenError) as e:
            return fail(e)
        return self._track(self._pool.runInteraction(interaction, *args))

    def _close_when_idle(self) -> None:
        if self._running or self._pool_closed:
            return
        # The reactor's shutdown trigger may have closed the pool already; twice would raise.
        if not self._pool.threadpool.joined:
            self._pool.close()
        self._pool_closed = True
        # Last: nothing can write as this node any more. Closing a file or a connection.
        self._lease.release()
        self._leased = False
        log.info("window store closed: {database}", database=self.database)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _open(self) -> None:
        self._usable(require_open=False)
        try:
            await self._open_and_migrate()
        except PermanentStoreError:
            raise
        except Exception as error:
            reason = self._settings.permanent_reason(error)
            if reason is None:
                raise
            raise PermanentStoreError(f"store {self.database}: {reason}") from error

    async def _open_and_migrate(self) -> None:
        now = self._reactor.seconds()
        await self._track(
            deferToThreadPool(self._reactor, self._pool.threadpool, self._settings.prepare)
        )
        if not self._leased:
            self.node_id = await self._track(
                deferToThreadPool(
                    self._reactor,
                    self._pool.threadpool,
                    acquire_node_id,
                    self._lease,
                    self._candidates,
                )
            )
            self._leased = True
        applied = await self._track(
            self._pool.runWithConnection(migrate, self._settings.dialect, now, MIGRATIONS)
        )
        for migration in applied:
            log.info(
                "schema migration {version} applied to {database}: {description}",
                version=migration.version,
                description=migration.description,
                database=self.database,
            )
        self._opened = True
        log.info(
            "window store open: {database}, schema version {version}",
            database=self.database,
            version=MIGRATIONS[-1].version,
            node_id=self.node_id,
        )

    async def _delete_expired(self, resolution: int, before: float, batch_size: int) -> int:
        if resolution < 1:
            raise ValueError(f"delete_expired needs a window resolution >= 1, got {resolution}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        bound = _int_bound(before)
        total = 0
        while True:
            deleted = await self._run(self._delete_batch_txn, int(resolution), bound, batch_size)
            total += deleted
            if deleted < batch_size:
                break
        if total:
            log.info(
                "deleted {deleted} expired rows of resolution {resolution}",
                deleted=total,
                resolution=resolution,
                before=bound,
            )
        return total

    async def _visitor_salts(
        self, periods: Sequence[int], new_salt: Callable[[], bytes], now: float
    ) -> dict[int, bytes]:
        salts = await self._run(self._read_salts_txn, periods)
        missing = [period for period in periods if period not in salts]
        if not missing:
            return salts
        fresh = [(period, checked_salt(new_salt()), now) for period in missing]
        stored, inserted = await self._run(self._insert_salts_txn, fresh)
        for period in inserted:
            log.info("visitor salt stored for the period starting {period}", period=period)
        salts.update(stored)
        return salts

    def _select(
        self,
        conditions: list[str],
        params: list[Any],
        names: Sequence[str] | None,
        prefix: str | None,
    ) -> Deferred[list[StoredMetric]]:
        name_filter = _name_filter(names, prefix)
        if name_filter is None:
            query = None
        else:
            where = " AND ".join([*conditions, *name_filter[0]])
            query = f"{_SELECT} WHERE {where} ORDER BY window_start, metric, node_id"
            params = [*params, *name_filter[1]]
        return self._run(self._select_txn, query, params)

    def _written(self, result: tuple[int, list[_Conflict]]) -> int:
        merged, conflicts = result
        for conflict in conflicts:
            log.warn(
                "stored {stored_kind} {metric} replaced by a {new_kind} (the metric changed kind)",
                metric=conflict.metric,
                stored_kind=conflict.stored_kind,
                new_kind=conflict.new_kind,
                resolution=conflict.resolution,
                window_start=conflict.window_start,
            )
        return merged

    # -- interactions (pool threads; adbapi commits on return, rolls back on exception) --

    def _sql(self, query: str) -> str:
        return self._settings.dialect.sql(query)

    def _write_txn(self, txn: Any, write: _Write, now: float) -> tuple[int, list[_Conflict]]:
        dialect = self._settings.dialect
        # Serialise this node's read-merge-write (and its mark) against its other connections.
        dialect.begin_exclusive(txn, lock_key(f"twisted-rta:node:{self.node_id}"))
        windows = write.windows
        if write.mark is not None:
            txn.execute(self._sql(_SELECT_MARK + dialect.for_update), (self.node_id,))
            row = txn.fetchone()
            committed = 0 if row is None else int(row[0])
            # Tagged at or below the committed mark: a transaction that committed stored it.
            windows = [window for window in windows if window.tag > committed]
            if write.mark > committed:
                txn.execute(self._sql(_UPSERT_MARK), (self.node_id, write.mark))
        conflicts: list[_Conflict] = []
        rows: list[tuple[str, int, int, str, str, bytes, float]] = []
        for (resolution, start), by_name in _group(windows).items():
            txn.execute(self._sql(_SELECT_NODE_WINDOW), (resolution, start, self.node_id))
            stored = {name: (kind, state) for name, kind, state in txn.fetchall()}
            for name, deltas in by_name.items():
                old = stored.get(name)
                metric = _merged(old, deltas)
                if old is not None and old[0] != metric.kind:
                    # Merging is impossible; keeping the old row would fail every retry.
                    conflicts.append(_Conflict(name, resolution, start, old[0], metric.kind))
                rows.append(
                    (name, resolution, start, self.node_id, metric.kind, metric.to_bytes(), now)
                )
        rows.extend(
            (name, TOTALS_RESOLUTION, 0, self.node_id, kind, state, now)
            for name, kind, state in write.totals
        )
        if rows:
            txn.executemany(self._sql(_UPSERT), rows)
        if write.publication is None:
            txn.execute(self._sql(_DELETE_PUBLICATION), (self.node_id,))
        else:
            txn.execute(
                self._sql(_UPSERT_PUBLICATION),
                (self.node_id, write.published_at, write.publication),
            )
        return len(windows), conflicts

    def _read_mark_txn(self, txn: Any) -> int:
        txn.execute(self._sql(_SELECT_MARK), (self.node_id,))
        row = txn.fetchone()
        return 0 if row is None else int(row[0])

    def _read_publications_txn(self, txn: Any, exclude_node: str) -> list[Publication]:
        txn.execute(self._sql(_SELECT_PUBLICATIONS), (exclude_node,))
        return [
            Publication(node_id, float(published_at), bytes(payload))
            for node_id, published_at, payload in txn.fetchall()
        ]

    def _load_totals_txn(self, txn: Any) -> dict[str, Metric]:
        txn.execute(
            self._sql(
                "SELECT metric, kind, state FROM rta_metric_windows"
                " WHERE resolution = ? AND window_start = 0 AND node_id = ?"
            ),
            (TOTALS_RESOLUTION, self.node_id),
        )
        return {name: metric_from_bytes(kind, bytes(state)) for name, kind, state in txn.fetchall()}

    def _select_txn(self, txn: Any, query: str | None, params: Sequence[Any]) -> list[StoredMetric]:
        if query is None:
            return []
        txn.execute(self._sql(query), tuple(params))
        return _decode(txn.fetchall())

    def _delete_batch_txn(self, txn: Any, resolution: int, before: int, batch_size: int) -> int:
        txn.execute(self._sql(_DELETE_BATCH), (resolution, before, batch_size))
        return int(txn.rowcount)

    def _read_salts_txn(self, txn: Any, periods: Sequence[int]) -> dict[int, bytes]:
        if not periods:
            return {}
        # Integers within BIGINT (salt_periods), so PostgreSQL compares BIGINT with BIGINT.
        query = _SELECT_SALTS.format(", ".join("?" * len(periods)))
        txn.execute(self._sql(query), tuple(periods))
        return {int(period): bytes(salt) for period, salt in txn.fetchall()}

    def _insert_salts_txn(
        self, txn: Any, fresh: Sequence[tuple[int, bytes, float]]
    ) -> tuple[dict[int, bytes], list[int]]:
        """Store each ``(period_start, salt, created_at)`` whose period has no salt yet; the
        stored salt of every one of those periods and the periods this call salted."""
        self._settings.dialect.begin_exclusive(txn, _SALTS_LOCK)
        inserted: list[int] = []
        for row in fresh:
            txn.execute(self._sql(_INSERT_SALT), row)
            if txn.rowcount == 1:  # 0: the period had a salt, which stays
                inserted.append(row[0])
        periods = [period for period, _, _ in fresh]
        salts = self._read_salts_txn(txn, periods)
        # Cannot happen while deletions take _SALTS_LOCK; never answer a partial dict.
        unsalted = [period for period in periods if period not in salts]
        if unsalted:
            raise RuntimeError(f"visitor salts of periods {unsalted} vanished while stored")
        return salts, inserted

    def _delete_salts_txn(self, txn: Any, before: int) -> int:
        self._settings.dialect.begin_exclusive(txn, _SALTS_LOCK)
        txn.execute(self._sql(_DELETE_SALTS), (before,))
        return int(txn.rowcount)

    def _check_txn(self, txn: Any) -> None:
        txn.execute("SELECT 1")
        txn.fetchall()

"""Visitor salts (issue 15): one salt per rotation period, shared by every node of a store.

The contract tests run on the memory store, SQLite and PostgreSQL (``make_any_store``: the
stores of one test share one database); the rest are SQL only (``make_store``).
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet.defer import gatherResults

from tests.store.conftest import AnyStoreFactory, StoreFactory
from tests.store.helpers import T0, batch_of, bounded, counter, raw_sql, window
from twisted_rta.store import sql
from twisted_rta.store.interface import Publication
from twisted_rta.store.memory import MemoryWindowStore
from twisted_rta.store.migrations import MIGRATIONS
from twisted_rta.store.sql import SQLWindowStore, StoreClosedError, StoreNotOpenError

DAY = 86_400
SALT_BYTES = 32


@define
class Salts:
    """A ``new_salt`` that counts its calls and the threads it was called on."""

    fixed: bytes | None = None
    calls: int = 0
    threads: set[int] = field(factory=set)

    def __call__(self) -> bytes:
        self.calls += 1
        self.threads.add(threading.get_ident())
        return self.fixed if self.fixed is not None else secrets.token_bytes(SALT_BYTES)


def never() -> bytes:
    raise AssertionError("new_salt called for a period that has a salt")


@define
class StaleReadStore(SQLWindowStore):
    """Its first read of the salts finds none: a node whose read ran just before another
    node's insert committed, so it goes on to insert a salt of its own."""

    stale_reads: int = 1

    def _read_salts_txn(self, txn: Any, periods: Any) -> dict[int, bytes]:
        if self.stale_reads:
            self.stale_reads -= 1
            return {}
        return super()._read_salts_txn(txn, periods)


# -- every store ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_first_call_stores_a_salt_per_period_and_later_calls_return_it(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    periods = [T0 - DAY, T0, T0 + DAY]
    first_salts = Salts()

    first = await bounded(store.visitor_salts(periods, first_salts, T0 + 5))

    assert sorted(first) == periods
    assert all(isinstance(salt, bytes) and len(salt) == SALT_BYTES for salt in first.values())
    assert len(set(first.values())) == 3
    assert first_salts.calls == 3
    # Stored: asked again (in any order, repeated), nothing new is made.
    again = await bounded(store.visitor_salts([T0 + DAY, T0, T0, T0 - DAY], never, T0 + 9))
    assert again == first
    # Only the period without a salt gets a new one.
    more = Salts()
    extended = await bounded(store.visitor_salts([T0, T0 + 2 * DAY], more, T0 + 9))
    assert more.calls == 1
    assert extended[T0] == first[T0]
    assert len(extended[T0 + 2 * DAY]) == SALT_BYTES
    assert extended[T0 + 2 * DAY] not in first.values()
    assert await bounded(store.visitor_salts([], never, T0)) == {}


@pytest_twisted.ensureDeferred
async def test_nodes_sharing_a_store_get_the_salt_stored_first(
    make_any_store: AnyStoreFactory,
) -> None:
    node_a = await make_any_store("node-a")
    node_b = await make_any_store("node-b")
    salt_a, salt_b = b"a" * SALT_BYTES, b"b" * SALT_BYTES

    from_a = await bounded(node_a.visitor_salts([T0], Salts(salt_a), T0))
    # node-b's new_salt would give another salt: the stored one wins where there is one.
    from_b = await bounded(node_b.visitor_salts([T0, T0 + DAY], Salts(salt_b), T0 + 1))
    from_a_later = await bounded(node_a.visitor_salts([T0, T0 + DAY], never, T0 + 2))

    assert from_a == {T0: salt_a}
    assert from_b == {T0: salt_a, T0 + DAY: salt_b}
    assert from_a_later == from_b


@pytest_twisted.ensureDeferred
async def test_deleting_salts_removes_only_older_periods_and_counts_them(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    other = await make_any_store("node-b")
    periods = [T0 - 2 * DAY, T0 - DAY, T0, T0 + DAY]
    salts = await bounded(store.visitor_salts(periods, Salts(), T0))

    # Periods starting before T0; T0 itself stays.
    assert await bounded(other.delete_visitor_salts(T0)) == 2

    assert await bounded(store.delete_visitor_salts(T0)) == 0
    kept = await bounded(store.visitor_salts([T0, T0 + DAY], never, T0))
    assert kept == {T0: salts[T0], T0 + DAY: salts[T0 + DAY]}
    # A deleted period has no salt any more: asked for, it gets a new one.
    remade = Salts(b"r" * SALT_BYTES)
    assert await bounded(store.visitor_salts([T0 - DAY], remade, T0)) == {
        T0 - DAY: b"r" * SALT_BYTES
    }
    assert remade.calls == 1
    assert await bounded(store.delete_visitor_salts(T0 + 2 * DAY)) == 3
    assert await bounded(store.visitor_salts([T0], Salts(b"n" * SALT_BYTES), T0)) == {
        T0: b"n" * SALT_BYTES
    }


@pytest.mark.parametrize(
    ("periods", "now", "new_salt", "message"),
    [
        ([T0 + 0.5], T0, Salts(), "must be an integer"),
        (["1704067200"], T0, Salts(), "must be an integer"),
        ([2**63], T0, Salts(), "does not fit a BIGINT"),
        ([T0], math.nan, Salts(), "finite time"),
        ([T0], math.inf, Salts(), "finite time"),
        ([T0], T0, Salts(b""), "empty salt"),
        ([T0], T0, lambda: "text", "must return bytes"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_requests_fail_and_store_nothing(
    make_any_store: AnyStoreFactory,
    periods: list[Any],
    now: float,
    new_salt: Callable[[], Any],
    message: str,
) -> None:
    store = await make_any_store()

    with pytest.raises(ValueError, match=message):
        await bounded(store.visitor_salts(periods, new_salt, now))

    good = b"g" * SALT_BYTES
    assert await bounded(store.visitor_salts([T0], Salts(good), T0)) == {T0: good}


@pytest_twisted.ensureDeferred
async def test_an_unavailable_memory_store_fails_and_stores_nothing() -> None:
    salts: dict[int, bytes] = {T0 - DAY: b"o" * SALT_BYTES}
    store = MemoryWindowStore(node_id="n", salts=salts)
    store.available = False

    with pytest.raises(ConnectionError):
        await bounded(store.visitor_salts([T0], never, T0))
    with pytest.raises(ConnectionError):
        await bounded(store.delete_visitor_salts(T0))

    assert salts == {T0 - DAY: b"o" * SALT_BYTES}


# -- SQL stores -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_salts_are_stored_with_their_creation_time(
    make_store: StoreFactory, database_url: str
) -> None:
    store = await make_store()
    salts = Salts()

    stored = await bounded(store.visitor_salts([T0, T0 + DAY], salts, T0 + 12.5))
    await bounded(store.visitor_salts([T0, T0 + DAY], never, T0 + 99))

    rows = await raw_sql(
        database_url,
        "SELECT period_start, salt, created_at FROM rta_visitor_salts ORDER BY period_start",
    )
    assert [(period, bytes(salt), at) for period, salt, at in rows] == [
        (T0, stored[T0], T0 + 12.5),
        (T0 + DAY, stored[T0 + DAY], T0 + 12.5),
    ]
    # new_salt runs on the reactor thread, not in the pool.
    assert salts.threads == {threading.get_ident()}


@pytest_twisted.ensureDeferred
async def test_a_node_that_raced_another_keeps_the_salt_stored_first(
    make_store: StoreFactory, database_url: str, captured_logs: list[dict[str, Any]]
) -> None:
    first = await make_store("node-a")
    late = await make_store("node-b", cls=StaleReadStore)
    salt_a, salt_b = b"a" * SALT_BYTES, b"b" * SALT_BYTES
    await bounded(first.visitor_salts([T0], Salts(salt_a), T0))
    late_salts = Salts(salt_b)

    # node-b read no salt for T0, so it tries to store its own, which must not replace A's.
    answer = await bounded(late.visitor_salts([T0, T0 + DAY], late_salts, T0 + 1))

    assert late_salts.calls == 2
    assert answer == {T0: salt_a, T0 + DAY: salt_b}
    rows = await raw_sql(
        database_url, "SELECT period_start, salt, created_at FROM rta_visitor_salts"
    )
    assert sorted((period, bytes(salt), at) for period, salt, at in rows) == [
        (T0, salt_a, T0),
        (T0 + DAY, salt_b, T0 + 1),
    ]
    stored_logs = [
        (event["log_namespace"], event["period"])
        for event in captured_logs
        if event.get("log_format", "").startswith("visitor salt stored")
    ]
    assert stored_logs == [("twisted_rta.store.sql", T0), ("twisted_rta.store.sql", T0 + DAY)]


@pytest_twisted.ensureDeferred
async def test_nodes_salting_a_new_period_at_once_all_get_one_salt(
    make_store: StoreFactory, database_url: str
) -> None:
    nodes = [await make_store(f"node-{i}") for i in range(4)]
    candidates = [bytes([i + 1]) * SALT_BYTES for i in range(len(nodes))]

    answers = await bounded(
        gatherResults(
            [
                node.visitor_salts([T0, T0 + DAY], Salts(candidate), T0)
                for node, candidate in zip(nodes, candidates, strict=True)
                for _ in range(3)
            ]
        )
    )

    assert len({answer[T0] for answer in answers}) == 1
    assert len({answer[T0 + DAY] for answer in answers}) == 1
    assert answers[0][T0] in candidates
    assert await raw_sql(database_url, "SELECT count(*) FROM rta_visitor_salts") == [(2,)]


@pytest_twisted.ensureDeferred
async def test_delete_visitor_salts_takes_a_fractional_bound_and_refuses_nan(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    await bounded(store.visitor_salts([T0 - 1, T0, T0 + 1], Salts(), T0))

    # period_start < T0 + 0.5: T0 - 1 and T0, not T0 + 1.
    assert await bounded(store.delete_visitor_salts(T0 + 0.5)) == 2  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        await bounded(store.delete_visitor_salts(math.nan))  # type: ignore[arg-type]
    assert sorted(await bounded(store.visitor_salts([T0 + 1], never, T0))) == [T0 + 1]


@pytest_twisted.ensureDeferred
async def test_salts_need_an_open_store(make_store: StoreFactory) -> None:
    unopened = await make_store(open=False)
    with pytest.raises(StoreNotOpenError):
        await bounded(unopened.visitor_salts([T0], never, T0))
    with pytest.raises(StoreNotOpenError):
        await bounded(unopened.delete_visitor_salts(T0))

    store = await make_store("node-b")
    await bounded(store.close())
    with pytest.raises(StoreClosedError):
        await bounded(store.visitor_salts([T0], never, T0))
    with pytest.raises(StoreClosedError):
        await bounded(store.delete_visitor_salts(T0))


@pytest_twisted.ensureDeferred
async def test_a_database_of_schema_version_2_gets_the_salts_table_with_its_rows_kept(
    make_store: StoreFactory,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: list[dict[str, Any]],
) -> None:
    # The previous release: migrations 1 and 2, no visitor salts.
    with monkeypatch.context() as patch:
        patch.setattr(sql, "MIGRATIONS", MIGRATIONS[:2])
        old = await make_store()
        await bounded(
            old.write(batch_of([window({"events": counter(3, 3)})], mark=4, publication=b"live"))
        )
        await bounded(old.close())
    assert sorted(await raw_sql(database_url, "SELECT version FROM rta_schema_migrations")) == [
        (1,),
        (2,),
    ]
    with pytest.raises(Exception, match=r"(?i)rta_visitor_salts"):
        await raw_sql(database_url, "SELECT count(*) FROM rta_visitor_salts")

    store = await make_store()

    recorded = await raw_sql(database_url, "SELECT version FROM rta_schema_migrations")
    assert sorted(recorded) == [(1,), (2,), (3,)]
    applied = [
        (event["version"], event["description"])
        for event in captured_logs
        if event.get("log_format", "").startswith("schema migration")
    ]
    assert applied[-1] == (3, "create rta_visitor_salts")
    assert await bounded(store.read_mark()) == 4
    [row] = await bounded(store.read_windows(60, T0, T0 + 60))
    assert row.value.value == 3
    reader = await make_store("node-b")
    assert await bounded(reader.read_publications(exclude_node="node-b")) == [
        Publication("node-a", T0, b"live")
    ]
    salt = b"s" * SALT_BYTES
    assert await bounded(store.visitor_salts([T0], Salts(salt), T0)) == {T0: salt}
    assert await bounded(reader.visitor_salts([T0], never, T0)) == {T0: salt}


@pytest_twisted.ensureDeferred
async def test_a_salt_is_one_row_per_period_and_never_null(
    make_store: StoreFactory, database_url: str
) -> None:
    await make_store()
    insert = "INSERT INTO rta_visitor_salts (period_start, salt, created_at) VALUES (?, ?, ?)"
    await raw_sql(database_url, insert, T0, b"x" * SALT_BYTES, float(T0))

    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await raw_sql(database_url, insert, T0, b"y" * SALT_BYTES, float(T0))
    with pytest.raises(Exception, match=r"(?i)not.null"):
        await raw_sql(database_url, insert, T0 + DAY, None, float(T0))

"""Store fixtures: every SQL store test runs against SQLite and PostgreSQL; the contract
tests (``make_any_store``) run against the memory store too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted

from tests.postgres import postgres_database
from tests.store.helpers import bounded
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.store.interface import Publication, WindowStore
from twisted_rta.store.memory import Key, MemoryWindowStore
from twisted_rta.store.sql import SQLWindowStore

StoreFactory = Callable[..., Awaitable[SQLWindowStore]]
AnyStoreFactory = Callable[..., Awaitable[WindowStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database; SQLite's parent directory does not exist yet."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/data/rta.sqlite3"
    else:
        yield from postgres_database()


@pytest_twisted.async_yield_fixture
async def make_store(database_url: str) -> AsyncIterator[StoreFactory]:
    """Builds stores on ``database_url`` (opened unless told otherwise); closes them after."""
    from twisted.internet import reactor

    stores: list[SQLWindowStore] = []

    async def factory(
        node_id: str = "node-a",
        *,
        url: str | None = None,
        cls: type[SQLWindowStore] = SQLWindowStore,
        open: bool = True,
    ) -> SQLWindowStore:
        store = cls.from_url(url or database_url, reactor=reactor, node_id=node_id)
        stores.append(store)
        if open:
            await bounded(store.open())
        return store

    yield factory
    for store in stores:
        await bounded(store.close())


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``memory:`` (one shared set of dicts per test) or a fresh SQL database."""
    if request.param == "memory":
        yield "memory:"
    elif request.param == "sqlite":
        yield f"sqlite://{tmp_path}/data/rta.sqlite3"
    else:
        yield from postgres_database()


@pytest_twisted.async_yield_fixture
async def make_any_store(any_database: str) -> AsyncIterator[AnyStoreFactory]:
    """Builds open stores of every kind on one shared database; closes them after."""
    from twisted.internet import reactor

    rows: dict[Key, Metric] = {}
    marks: dict[str, int] = {}
    publications: dict[str, Publication] = {}
    salts: dict[int, bytes] = {}
    stores: list[WindowStore] = []

    async def factory(node_id: str = "node-a") -> WindowStore:
        store: WindowStore
        if any_database == "memory:":
            store = MemoryWindowStore(
                node_id=node_id, rows=rows, marks=marks, publications=publications, salts=salts
            )
        else:
            store = SQLWindowStore.from_url(any_database, reactor=reactor, node_id=node_id)
        stores.append(store)
        await bounded(store.open())
        return store

    yield factory
    for store in stores:
        await bounded(store.close())

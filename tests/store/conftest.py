"""Store fixtures: every SQL store test runs against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted

from tests.postgres import postgres_database
from tests.store.helpers import bounded
from twisted_rta.store.sql import SQLWindowStore

StoreFactory = Callable[..., Awaitable[SQLWindowStore]]


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

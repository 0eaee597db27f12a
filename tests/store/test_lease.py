"""Node-id leases on SQLite and PostgreSQL, and which store errors are permanent."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.postgres import postgres_database
from tests.store.conftest import StoreFactory
from tests.store.helpers import T0, batch_of, bounded, counter, window
from twisted_rta.store.dialects import MissingDriverError, settings_from_url
from twisted_rta.store.interface import NodeIdHeldError, PermanentStoreError
from twisted_rta.store.lease import lock_file_path, node_id_candidates
from twisted_rta.store.sql import SQLWindowStore


async def open_failure(store: SQLWindowStore) -> BaseException:
    try:
        await bounded(store.open())
    except Exception as error:
        return error
    raise AssertionError("open() succeeded")


@pytest_twisted.ensureDeferred
async def test_an_explicit_node_id_held_by_another_store_is_refused(
    make_store: StoreFactory,
) -> None:
    await make_store("web-1:8080")
    second = await make_store("web-1:8080", open=False)
    error = await open_failure(second)
    assert isinstance(error, NodeIdHeldError)
    assert str(error) == (
        "node id 'web-1:8080' is already held by a live process on this store "
        "(give each process its own --node-id)"
    )


@pytest_twisted.ensureDeferred
async def test_default_ids_take_the_next_free_slot_and_are_stable(
    make_store: StoreFactory, database_url: str
) -> None:
    from twisted.internet import reactor

    def default(open_it: bool = True) -> SQLWindowStore:
        return SQLWindowStore.from_url(
            database_url, reactor=reactor, node_id="web-1:8080", node_id_slots=3
        )

    stores = [default() for _ in range(4)]
    try:
        for store in stores[:3]:
            await bounded(store.open())
        assert [store.node_id for store in stores[:3]] == [
            "web-1:8080",
            "web-1:8080/2",
            "web-1:8080/3",
        ]
        error = await open_failure(stores[3])
        assert isinstance(error, NodeIdHeldError)
        assert "every default node id from 'web-1:8080' to 'web-1:8080/3'" in str(error)
        # A closed store gives its id back; the next one to open takes it, data and all.
        await bounded(stores[1].write(batch_of([window({"n": counter(1)})], {"n": counter(5)})))
        await bounded(stores[1].close())
        await bounded(stores[3].open())
        assert stores[3].node_id == "web-1:8080/2"
        totals = await bounded(stores[3].load_totals())
        assert totals["n"].value == 5
    finally:
        for store in stores:
            await bounded(store.close())


@pytest_twisted.ensureDeferred
async def test_the_lease_does_not_block_this_nodes_own_writes(make_store: StoreFactory) -> None:
    # On PostgreSQL the lease and the per-write transaction lock must use different keys.
    store = await make_store()
    done: Deferred[int] = store.write(batch_of([window({"n": counter(1)}, start=T0)]))
    await bounded(done)


def test_candidates_and_lock_file_names() -> None:
    assert node_id_candidates("h:80", 1) == ("h:80",)
    assert node_id_candidates("h:80", 3) == ("h:80", "h:80/2", "h:80/3")
    assert lock_file_path("/d/rta.sqlite3", "h:80/2").startswith("/d/rta.sqlite3.h_80_2.")
    assert lock_file_path("/d/x", "a:1") != lock_file_path("/d/x", "a_1")


def test_a_missing_psycopg_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(MissingDriverError) as raised:
        settings_from_url("postgresql://rta@db/rta", max_connections=2)
    assert str(raised.value) == (
        "PostgreSQL needs the psycopg package: pip install 'twisted-rta[postgresql]'"
    )


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("message", "sqlstate", "reason"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  database "rta" does not exist',
            None,
            'database "rta" does not exist',
        ),
        (
            'connection failed: connection to server at "db", port 5432 failed: FATAL:  '
            'password authentication failed for user "rta"',
            None,
            'password authentication failed for user "rta"',
        ),
        ('FATAL:  role "rta" does not exist', None, 'role "rta" does not exist'),
        (
            "permission denied for schema public",
            "42501",
            "permission denied for schema public (SQLSTATE 42501)",
        ),
        ("connection failed: Connection refused", None, None),
        ("terminating connection due to administrator command", "57P01", None),
        ("the database system is starting up", "57P03", None),
    ],
)
def test_postgresql_errors_are_classified(
    message: str, sqlstate: str | None, reason: str | None
) -> None:
    settings = settings_from_url("postgresql://rta@db/rta", max_connections=2)
    assert settings.permanent_reason(_PgError(message, sqlstate)) == reason


def test_sqlite_permission_errors_are_permanent() -> None:
    settings = settings_from_url("sqlite:///x/rta.sqlite3", max_connections=1)
    assert settings.permanent_reason(PermissionError(13, "Permission denied")) is not None
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    assert settings.permanent_reason(readonly) is not None
    assert settings.permanent_reason(sqlite3.OperationalError("database is locked")) is None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A reachable PostgreSQL server (through a fresh database on it)."""
    yield from postgres_database()


@pytest_twisted.ensureDeferred
async def test_a_postgresql_database_that_does_not_exist_is_permanent(postgres_url: str) -> None:
    # PostgreSQL only: SQLite creates its file.
    from twisted.internet import reactor

    url = postgres_url.rsplit("/", 1)[0] + "/rta_missing_database"
    store = SQLWindowStore.from_url(url, reactor=reactor, node_id="n")
    try:
        error = await open_failure(store)
    finally:
        await bounded(store.close())
    assert isinstance(error, PermanentStoreError)
    assert str(error) == (
        'store postgresql://127.0.0.1:5432/rta_missing_database: database "rta_missing_database" '
        "does not exist"
    )

"""SQLWindowStore against real databases: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import random
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from tests.postgres import POSTGRES_URL, create_postgres_database, drop_postgres_database
from tests.store.conftest import StoreFactory
from tests.store.helpers import (
    T0,
    batch_of,
    bounded,
    counter,
    raw_sql,
    users,
    window,
)
from twisted_rta.aggregation.metrics import Counter, Gauge, Histogram, Unique
from twisted_rta.store import sql
from twisted_rta.store.interface import Publication, SchemaTooNewError, StoredMetric
from twisted_rta.store.migrations import MIGRATIONS
from twisted_rta.store.sql import SQLWindowStore, StoreClosedError, StoreNotOpenError


@define
class RecordingStore(SQLWindowStore):
    """Records, from inside the pool, which thread wrote and how much each batch deleted."""

    write_threads: list[int] = field(factory=list)
    deleted_batches: list[int] = field(factory=list)

    def _write_txn(self, txn: Any, *args: Any) -> Any:
        self.write_threads.append(threading.get_ident())
        return super()._write_txn(txn, *args)

    def _delete_batch_txn(self, txn: Any, *args: Any) -> int:
        deleted = super()._delete_batch_txn(txn, *args)
        self.deleted_batches.append(deleted)
        return deleted


class FailingStore(SQLWindowStore):
    """Fails each write after its upsert ran, inside the transaction."""

    def _write_txn(self, txn: Any, *args: Any) -> Any:
        super()._write_txn(txn, *args)
        raise RuntimeError("failure after the upsert")


def by_key(rows: list[StoredMetric]) -> dict[tuple[str, int, str], StoredMetric]:
    return {(row.metric, row.window_start, row.node_id): row for row in rows}


def values(rows: list[StoredMetric]) -> dict[tuple[str, int, str], float]:
    return {key: row.value.value for key, row in by_key(rows).items()}


# -- migrations ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_open_records_migrations_once_and_reopen_is_idempotent(
    make_store: StoreFactory, database_url: str, captured_logs: list[dict[str, Any]]
) -> None:
    await make_store()
    recorded = await raw_sql(database_url, "SELECT version, applied_at FROM rta_schema_migrations")
    assert [version for version, _ in recorded] == [m.version for m in MIGRATIONS]
    assert all(applied_at > 0 for _, applied_at in recorded)

    await make_store("node-b")

    assert await raw_sql(database_url, "SELECT version, applied_at FROM rta_schema_migrations") == (
        recorded
    )
    applied_logs = [
        event["version"]
        for event in captured_logs
        if event.get("log_format", "").startswith("schema migration")
    ]
    assert applied_logs == [m.version for m in MIGRATIONS]
    assert await raw_sql(database_url, "SELECT count(*) FROM rta_metric_windows") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_nodes_opening_a_fresh_database_together_migrate_it_once(
    make_store: StoreFactory, database_url: str
) -> None:
    stores = [await make_store(f"node-{i}", open=False) for i in range(4)]

    await bounded(gatherResults([store.open() for store in stores]))

    recorded = await raw_sql(database_url, "SELECT version FROM rta_schema_migrations")
    assert recorded == [(m.version,) for m in MIGRATIONS]


@pytest_twisted.ensureDeferred
async def test_schema_newer_than_known_refuses_to_open(
    make_store: StoreFactory, database_url: str
) -> None:
    await make_store()
    future = MIGRATIONS[-1].version + 1
    await raw_sql(
        database_url,
        "INSERT INTO rta_schema_migrations (version, applied_at) VALUES (?, ?)",
        future,
        float(T0),
    )
    store = await make_store("node-b", open=False)

    with pytest.raises(SchemaTooNewError) as raised:
        await bounded(store.open())

    assert str(raised.value) == (
        f"database schema version {future} is newer than this twisted-rta knows "
        f"({MIGRATIONS[-1].version}); upgrade twisted-rta"
    )
    with pytest.raises(StoreNotOpenError):
        await bounded(store.write(batch_of([window({"events": counter(1)})])))


@pytest_twisted.ensureDeferred
async def test_a_database_of_schema_version_1_is_upgraded_with_its_rows_kept(
    make_store: StoreFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A release before marks and publications: only migration 1.
    with monkeypatch.context() as patch:
        patch.setattr(sql, "MIGRATIONS", MIGRATIONS[:1])
        old = await make_store()
        await bounded(old.close())
    assert await raw_sql(database_url, "SELECT version FROM rta_schema_migrations") == [(1,)]
    state = counter(4, 4).to_bytes()
    for resolution, start in ((60, T0), (0, 0)):
        await raw_sql(
            database_url,
            "INSERT INTO rta_metric_windows"
            " (metric, resolution, window_start, node_id, kind, state, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            "events", resolution, start, "node-a", "counter", state, float(T0),
        )  # fmt: skip

    store = await make_store()

    recorded = await raw_sql(database_url, "SELECT version FROM rta_schema_migrations")
    assert sorted(recorded) == [(m.version,) for m in MIGRATIONS]
    assert await bounded(store.read_mark()) == 0
    assert await bounded(store.read_publications(exclude_node="node-b")) == []
    assert (await bounded(store.load_totals()))["events"].value == 4
    merged = await bounded(
        store.write(batch_of([window({"events": counter(1)})], mark=1, publication=b"live"))
    )
    assert merged == 1
    [row] = await bounded(store.read_windows(60, T0, T0 + 60))
    assert (row.value.value, row.value.count) == (5, 5)
    reader = await make_store("node-b")
    assert await bounded(reader.read_publications(exclude_node="node-b")) == [
        Publication("node-a", T0, b"live")
    ]


@pytest_twisted.ensureDeferred
async def test_the_previous_release_refuses_an_upgraded_database(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_store()
    # The previous release knew migrations 1 and 2 (no visitor salts).
    monkeypatch.setattr(sql, "MIGRATIONS", MIGRATIONS[:2])
    old = await make_store("node-b", open=False)

    with pytest.raises(
        SchemaTooNewError, match=r"version 3 is newer than this twisted-rta knows \(2\)"
    ):
        await bounded(old.open())


@pytest_twisted.ensureDeferred
async def test_marks_and_publications_have_one_row_per_node(
    make_store: StoreFactory, database_url: str
) -> None:
    await make_store()
    mark = "INSERT INTO rta_node_marks (node_id, mark) VALUES (?, ?)"
    publication = "INSERT INTO rta_publications (node_id, published_at, payload) VALUES (?, ?, ?)"
    await raw_sql(database_url, mark, "n", 1)
    await raw_sql(database_url, publication, "n", float(T0), b"x")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await raw_sql(database_url, mark, "n", 2)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await raw_sql(database_url, publication, "n", float(T0), b"y")
    with pytest.raises(Exception, match=r"(?i)check"):
        await raw_sql(database_url, mark, "m", -1)


# -- writing and reading ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_metric_kind_survives_a_round_trip(make_store: StoreFactory) -> None:
    store = await make_store()
    rng = random.Random(7)
    gauge = Gauge()
    gauge.set(42.25, T0 + 2)
    histogram = Histogram()
    for _ in range(5000):
        histogram.observe(rng.lognormvariate(3, 1), T0 + 3)
    metrics = {
        "requests": Counter(value=12.5, count=3, updated_at=T0 + 1),
        "queue_depth": gauge,
        "latency_ms": histogram,
        "visitors": users(*(f"user-{i}" for i in range(3000))),
    }

    await bounded(store.write(batch_of([window(metrics)])))
    rows = await bounded(store.read_windows(60, T0, T0 + 60))

    assert [(r.metric, r.resolution, r.window_start, r.node_id) for r in rows] == [
        (name, 60, T0, "node-a") for name in sorted(metrics)
    ]
    for row in rows:
        original = metrics[row.metric]
        assert type(row.value) is type(original)
        assert row.value.snapshot(row.metric) == original.snapshot(row.metric)
    stored = {row.metric: row.value for row in rows}
    assert isinstance(stored["latency_ms"], Histogram)
    quantiles = [q / 100 for q in range(1, 100)]
    assert [stored["latency_ms"].sketch.get_quantile(q) for q in quantiles] == [
        histogram.sketch.get_quantile(q) for q in quantiles
    ]
    assert isinstance(stored["visitors"], Unique)
    assert stored["visitors"].sketch.get_estimate() == metrics["visitors"].sketch.get_estimate()


@pytest_twisted.ensureDeferred
async def test_second_write_of_a_window_merges_without_touching_the_callers_metrics(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    first = {"events": counter(5, 5), "active_users": users(*(f"u{i}" for i in range(100)))}
    second = {"events": counter(3, 3), "active_users": users(*(f"u{i}" for i in range(50, 150)))}
    expected_users = first["active_users"].copy()
    expected_users.merge(second["active_users"])

    await bounded(store.write(batch_of([window(first)])))
    await bounded(store.write(batch_of([window(second)])))
    rows = {r.metric: r.value for r in await bounded(store.read_windows(60, T0, T0 + 60))}

    assert (rows["events"].value, rows["events"].count) == (8, 8)
    assert isinstance(rows["active_users"], Unique)
    assert rows["active_users"].estimate == expected_users.estimate
    assert abs(rows["active_users"].estimate - 150) <= 2  # u50..u99 counted once
    assert (first["events"].value, second["events"].value) == (5, 3)
    assert first["active_users"].estimate == 100


@pytest_twisted.ensureDeferred
async def test_late_deltas_merge_into_the_stored_window(make_store: StoreFactory) -> None:
    store = await make_store()
    await bounded(store.write(batch_of([window({"events": counter(4, 4)})])))

    late = window({"events": counter(2, 2), "events:click": counter(2, 2)}, late=True)
    await bounded(store.write(batch_of([late])))
    # A close and a late delta of another window in one batch merge with each other too.
    later = T0 + 60
    await bounded(
        store.write(
            batch_of(
                [
                    window({"events": counter(1)}, later),
                    window({"events": counter(6)}, later, late=True),
                ],
                {},
            )
        )
    )

    rows = await bounded(store.read_windows(60, T0, T0 + 120))
    assert values(rows) == {
        ("events", T0, "node-a"): 6,
        ("events:click", T0, "node-a"): 2,
        ("events", later, "node-a"): 7,
    }


@pytest_twisted.ensureDeferred
async def test_nodes_keep_their_own_rows_of_the_same_window(make_store: StoreFactory) -> None:
    node_a = await make_store("node-a")
    node_b = await make_store("node-b")

    await bounded(node_a.write(batch_of([window({"events": counter(1)})])))
    await bounded(node_b.write(batch_of([window({"events": counter(10)})])))
    await bounded(node_a.write(batch_of([window({"events": counter(1)})])))

    rows = await bounded(node_b.read_windows(60, T0, T0 + 60))
    assert values(rows) == {("events", T0, "node-a"): 2, ("events", T0, "node-b"): 10}


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_of_one_node_all_merge(make_store: StoreFactory) -> None:
    store = await make_store()

    writes = [store.write(batch_of([window({"events": counter(1)})])) for _ in range(12)]
    await bounded(gatherResults(writes))

    [row] = await bounded(store.read_windows(60, T0, T0 + 60))
    assert (row.value.value, row.value.count) == (12, 12)


@pytest_twisted.ensureDeferred
async def test_totals_overwrite_and_are_read_per_node(make_store: StoreFactory) -> None:
    node_a = await make_store("node-a")
    node_b = await make_store("node-b")

    await bounded(node_a.write(batch_of([], {"total_events": counter(5, 5)})))
    await bounded(node_a.write(batch_of([], {"total_events": counter(7, 7)})))
    await bounded(
        node_b.write(
            batch_of([], {"total_events": counter(100, 100), "unique_users": users("x", "y")})
        )
    )

    totals = await bounded(node_a.load_totals())
    assert list(totals) == ["total_events"]
    assert (totals["total_events"].value, totals["total_events"].count) == (7, 7)
    others = await bounded(node_a.read_totals(exclude_node="node-a"))
    assert [(r.metric, r.node_id, r.resolution, r.window_start) for r in others] == [
        ("total_events", "node-b", 0, 0),
        ("unique_users", "node-b", 0, 0),
    ]
    everyone = await bounded(node_a.read_totals(exclude_node=None, prefix="total"))
    assert values(everyone) == {
        ("total_events", 0, "node-a"): 7,
        ("total_events", 0, "node-b"): 100,
    }
    assert await bounded(node_a.read_windows(0, -math.inf, math.inf, names=["unused"])) == []


@pytest_twisted.ensureDeferred
async def test_name_filters_match_exact_names_and_literal_prefixes(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    names = [
        "page:/a", "page:/a/b", "page:/ab", "page:/a:x", "page;x", "page", "pages:/x",
        "events:click", "100%_done", "100xx_done", "a_c", "abc", "ñandú:1", "ño",
    ]  # fmt: skip
    await bounded(store.write(batch_of([window({name: counter(1) for name in names})])))

    async def matching(**filters: Any) -> list[str]:
        rows = await bounded(store.read_windows(60, T0, T0 + 60, **filters))
        return [row.metric for row in rows]

    assert await matching(prefix="page:/a") == ["page:/a", "page:/a/b", "page:/a:x", "page:/ab"]
    assert await matching(prefix="page") == [
        "page", "page:/a", "page:/a/b", "page:/a:x", "page:/ab", "page;x", "pages:/x",
    ]  # fmt: skip
    assert await matching(prefix="100%") == ["100%_done"]
    assert await matching(prefix="a_") == ["a_c"]
    assert await matching(prefix="ñandú:") == ["ñandú:1"]
    assert await matching(names=["page", "abc", "missing"]) == ["abc", "page"]
    assert await matching(names=["page:/a", "abc"], prefix="page") == ["page:/a"]
    assert await matching(names=[]) == []
    assert len(await matching()) == len(names)


@pytest_twisted.ensureDeferred
async def test_read_windows_takes_starts_in_from_inclusive_to_exclusive(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    starts = [T0 - 60, T0, T0 + 60, T0 + 120]
    windows = [window({"events": counter(1)}, start) for start in starts]
    await bounded(store.write(batch_of([*windows, window({"events": counter(1)}, T0, 3600)])))

    async def starts_between(start_from: float, start_to: float) -> list[int]:
        rows = await bounded(store.read_windows(60, start_from, start_to))
        return [row.window_start for row in rows]

    assert await starts_between(T0, T0 + 120) == [T0, T0 + 60]
    assert await starts_between(T0 + 0.5, T0 + 120.5) == [T0 + 60, T0 + 120]
    assert await starts_between(-math.inf, math.inf) == starts
    assert await starts_between(T0, T0) == []
    rows = await bounded(store.read_windows(3600, T0, T0 + 3600))
    assert [(row.resolution, row.window_start) for row in rows] == [(3600, T0)]


@pytest_twisted.ensureDeferred
async def test_delete_expired_works_in_batches_and_spares_newer_rows_and_totals(
    make_store: StoreFactory,
) -> None:
    store = await make_store(cls=RecordingStore)
    other = await make_store("node-b")
    metrics = {name: counter(1) for name in ("events", "events:click", "events:view")}
    minutes = [window(metrics, T0 + 60 * i) for i in range(7)]
    await bounded(
        store.write(batch_of([*minutes, window(metrics, T0, 3600)], {"total_events": counter(9)}))
    )
    await bounded(
        other.write(batch_of([window({"events": counter(1)})], {"total_events": counter(1)}))
    )

    deleted = await bounded(store.delete_expired(60, T0 + 5 * 60, batch_size=5))

    assert deleted == 5 * 3 + 1
    assert isinstance(store, RecordingStore)
    assert store.deleted_batches == [5, 5, 5, 1]
    left = await bounded(store.read_windows(60, -math.inf, math.inf))
    assert sorted({row.window_start for row in left}) == [T0 + 300, T0 + 360]
    assert len(left) == 6
    assert len(await bounded(store.read_windows(3600, -math.inf, math.inf))) == 3
    assert len(await bounded(store.read_totals(exclude_node=None))) == 2
    assert await bounded(store.delete_expired(60, T0 + 5 * 60, batch_size=5)) == 0
    with pytest.raises(ValueError, match="resolution"):
        await bounded(store.delete_expired(0, math.inf, batch_size=5))
    assert len(await bounded(store.read_totals(exclude_node=None))) == 2


@pytest_twisted.ensureDeferred
async def test_a_metric_that_changed_kind_replaces_the_stored_row(
    make_store: StoreFactory, captured_logs: list[dict[str, Any]]
) -> None:
    store = await make_store()
    gauge = Gauge()
    gauge.set(3.5, T0)
    await bounded(store.write(batch_of([window({"depth": counter(1)})])))

    await bounded(store.write(batch_of([window({"depth": gauge})])))

    [row] = await bounded(store.read_windows(60, T0, T0 + 60))
    assert isinstance(row.value, Gauge)
    assert row.value.value == 3.5
    assert any(event.get("metric") == "depth" for event in captured_logs)


# -- failures and threads -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sub_second_resolutions_are_refused(make_store: StoreFactory) -> None:
    store = await make_store()

    # Resolution 0 holds the totals; a 0.5 s window would overwrite them.
    with pytest.raises(ValueError, match="whole seconds"):
        await bounded(store.write(batch_of([window({"events": counter(1)}, resolution=0.5)])))


@pytest_twisted.ensureDeferred
async def test_a_failing_write_errbacks_and_leaves_nothing_written(
    make_store: StoreFactory,
) -> None:
    failing = await make_store(cls=FailingStore)
    reader = await make_store("node-b")

    failed = batch_of(
        [window({"events": counter(1)})], {"total": counter(1)}, mark=1, publication=b"p"
    )
    with pytest.raises(RuntimeError, match="failure after the upsert"):
        await bounded(failing.write(failed))

    assert await bounded(reader.read_windows(60, -math.inf, math.inf)) == []
    assert await bounded(reader.read_totals(exclude_node=None)) == []
    assert await bounded(failing.read_mark()) == 0
    assert await bounded(reader.read_publications(exclude_node="node-b")) == []
    # The rolled-back connection is still usable.
    await bounded(failing.check())


@pytest_twisted.ensureDeferred
async def test_a_closed_store_fails_every_call(make_store: StoreFactory) -> None:
    store = await make_store()
    await bounded(store.check())
    await bounded(store.close())
    await bounded(store.close())

    with pytest.raises(StoreClosedError):
        await bounded(store.write(batch_of([window({"events": counter(1)})])))
    with pytest.raises(StoreClosedError):
        await bounded(store.check())
    with pytest.raises(StoreClosedError):
        await bounded(store.open())


@pytest_twisted.ensureDeferred
async def test_open_can_be_retried_after_the_database_was_unavailable(
    make_store: StoreFactory, database_url: str, tmp_path: Path
) -> None:
    # SQLite: a file where the directory should be. PostgreSQL: a database not created yet.
    if database_url.startswith("sqlite:"):
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        url = f"sqlite://{blocker}/rta.sqlite3"
        repair = blocker.unlink
    else:
        name = f"rta_test_{secrets.token_hex(6)}_late"
        url = POSTGRES_URL.format(name=name)

        def repair() -> None:
            create_postgres_database(name)

    store = await make_store(url=url, open=False)
    try:
        with pytest.raises(Exception):  # noqa: B017 (the error is the database's own)
            await bounded(store.open())
        with pytest.raises(StoreNotOpenError):
            await bounded(store.check())

        repair()
        await bounded(store.open())
        await bounded(store.write(batch_of([window({"events": counter(1)})])))
        assert len(await bounded(store.read_windows(60, T0, T0 + 60))) == 1
    finally:
        await bounded(store.close())
        if not database_url.startswith("sqlite:"):
            drop_postgres_database(name)


@pytest_twisted.ensureDeferred
async def test_writes_run_in_the_pool_not_on_the_reactor_thread(make_store: StoreFactory) -> None:
    store = await make_store(cls=RecordingStore)

    await bounded(store.write(batch_of([window({"events": counter(1)})], {"total": counter(1)})))

    assert isinstance(store, RecordingStore)
    assert len(store.write_threads) == 1
    assert store.write_threads[0] != threading.get_ident()
    assert store.write_threads[0] != threading.main_thread().ident
    assert reactor.running


# -- URLs ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_relative_sqlite_url_creates_the_directory_and_uses_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLWindowStore.from_url("sqlite:state/db/rta.sqlite3", reactor=reactor, node_id="n")
    try:
        await bounded(store.open())
    finally:
        await bounded(store.close())

    path = tmp_path / "state" / "db" / "rta.sqlite3"
    assert path.is_file()
    mode = await raw_sql(f"sqlite://{path}", "PRAGMA journal_mode")
    assert mode == [("wal",)]

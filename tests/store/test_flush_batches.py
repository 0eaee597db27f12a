"""The WindowStore contract of issue 12 (a flush survives kill -9, one truth across nodes):
marks make a replayed batch merge nothing, publications carry live windows between nodes.
Every test runs on the memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import math
import random

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from tests.store.conftest import AnyStoreFactory
from tests.store.helpers import T0, batch_of, bounded, counter, window
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.store.interface import MAX_MARK, FlushBatch, Publication, WindowStore


async def stored_counts(store: WindowStore) -> dict[tuple[str, int, str], float]:
    rows = await bounded(store.read_windows(60, -math.inf, math.inf))
    return {(row.metric, row.window_start, row.node_id): row.value.value for row in rows}


async def total(store: WindowStore, name: str) -> float:
    return (await bounded(store.load_totals()))[name].value


def minute(index: int, value: float = 1) -> ClosedWindow:
    return window({"events": counter(value)}, T0 + 60 * index)


def tagged(mark: int, *windows: tuple[int, ClosedWindow], **fields: object) -> FlushBatch:
    values: dict[str, object] = {"totals": {}, "publication": None, "published_at": T0}
    values.update(fields)
    return FlushBatch(windows=list(windows), mark=mark, **values)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_a_batch_with_a_mark_writes_its_windows_once(make_any_store: AnyStoreFactory) -> None:
    store = await make_any_store()
    assert await bounded(store.read_mark()) == 0

    merged = await bounded(store.write(tagged(1, (1, minute(0, 3)), (1, minute(1, 4)))))

    assert merged == 2
    assert await bounded(store.read_mark()) == 1
    assert await stored_counts(store) == {
        ("events", T0, "node-a"): 3,
        ("events", T0 + 60, "node-a"): 4,
    }


@pytest_twisted.ensureDeferred
async def test_a_replayed_batch_merges_nothing_but_overwrites_totals_and_publication(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    reader = await make_any_store("node-b")
    windows = [(1, minute(0, 3)), (1, window({"events": counter(2)}, T0, late=True))]
    await bounded(
        store.write(
            tagged(1, *windows, totals={"total": counter(5)}, publication=b"first", published_at=T0)
        )
    )

    # The process died before its next checkpoint recorded the commit: the same windows
    # come again with the same tags, with the totals and live state of the new process.
    replayed = await bounded(
        store.write(
            tagged(
                1, *windows, totals={"total": counter(9)}, publication=b"again", published_at=T0 + 5
            )
        )
    )

    assert replayed == 0
    assert await stored_counts(store) == {("events", T0, "node-a"): 5}
    assert await total(store, "total") == 9
    assert await bounded(reader.read_publications(exclude_node="node-b")) == [
        Publication("node-a", T0 + 5, b"again")
    ]
    assert await bounded(store.read_mark()) == 1


@pytest_twisted.ensureDeferred
async def test_a_batch_mixing_committed_and_new_tags_merges_only_the_new_ones(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    await bounded(store.write(tagged(2, (1, minute(0)), (2, minute(1)))))

    # Checkpoint 3 still holds windows first checkpointed in 1 and 2 (their commit was
    # never recorded locally) beside new ones.
    merged = await bounded(
        store.write(tagged(3, (1, minute(0)), (2, minute(1)), (3, minute(1, 10)), (3, minute(2))))
    )

    assert merged == 2
    assert await bounded(store.read_mark()) == 3
    assert await stored_counts(store) == {
        ("events", T0, "node-a"): 1,
        ("events", T0 + 60, "node-a"): 11,
        ("events", T0 + 120, "node-a"): 1,
    }


@pytest_twisted.ensureDeferred
async def test_without_a_mark_every_window_merges_and_the_mark_is_kept(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    await bounded(store.write(tagged(5, (5, minute(0)))))

    first = await bounded(store.write(batch_of([minute(0), minute(1)])))
    second = await bounded(store.write(batch_of([minute(0)], tag=3)))

    assert (first, second) == (2, 1)
    assert await stored_counts(store) == {
        ("events", T0, "node-a"): 3,
        ("events", T0 + 60, "node-a"): 1,
    }
    assert await bounded(store.read_mark()) == 5


@pytest_twisted.ensureDeferred
async def test_the_mark_never_goes_down(make_any_store: AnyStoreFactory) -> None:
    store = await make_any_store()
    await bounded(store.write(tagged(5, (5, minute(0)))))

    # An older checkpoint (a restored checkpoint directory): its windows are all stored.
    older = await bounded(
        store.write(tagged(3, (3, minute(0)), totals={"total": counter(4)}, publication=b"p"))
    )
    assert older == 0
    assert await bounded(store.read_mark()) == 5
    assert await total(store, "total") == 4

    assert await bounded(store.write(tagged(6, (6, minute(0))))) == 1
    assert await bounded(store.read_mark()) == 6
    assert await stored_counts(store) == {("events", T0, "node-a"): 2}
    # An empty batch still advances the mark (a checkpoint with nothing closed).
    assert await bounded(store.write(tagged(7))) == 0
    assert await bounded(store.read_mark()) == 7


@pytest_twisted.ensureDeferred
async def test_concurrent_replays_of_one_batch_merge_it_once(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    batch = tagged(1, (1, minute(0)), (1, minute(1)))

    merged = await bounded(gatherResults([store.write(batch) for _ in range(8)]))

    assert sorted(merged) == [0] * 7 + [2]
    assert await stored_counts(store) == {
        ("events", T0, "node-a"): 1,
        ("events", T0 + 60, "node-a"): 1,
    }


@pytest_twisted.ensureDeferred
async def test_publications_are_replaced_deleted_and_not_read_by_their_own_node(
    make_any_store: AnyStoreFactory,
) -> None:
    node_a = await make_any_store("node-a")
    node_b = await make_any_store("node-b")
    node_c = await make_any_store("node-c")
    assert await bounded(node_a.read_publications(exclude_node="node-a")) == []

    await bounded(node_b.write(tagged(1, publication=b"b1", published_at=T0 + 1)))
    await bounded(node_a.write(tagged(1, publication=b"a1", published_at=T0 + 2)))
    await bounded(node_c.write(batch_of(publication=b"c1", published_at=T0 + 3)))

    assert await bounded(node_a.read_publications(exclude_node="node-a")) == [
        Publication("node-b", T0 + 1, b"b1"),
        Publication("node-c", T0 + 3, b"c1"),
    ]
    await bounded(node_b.write(tagged(2, publication=b"b2", published_at=T0 + 4)))
    await bounded(node_c.write(batch_of(publication=None, published_at=T0 + 5)))
    assert await bounded(node_a.read_publications(exclude_node="node-a")) == [
        Publication("node-b", T0 + 4, b"b2")
    ]
    assert await bounded(node_b.read_publications(exclude_node="node-b")) == [
        Publication("node-a", T0 + 2, b"a1")
    ]
    # A clean shutdown: the final flush deletes it, even on a replay of a committed mark.
    await bounded(node_a.write(tagged(1, publication=None)))
    assert await bounded(node_b.read_publications(exclude_node="node-b")) == []
    # Deleting what is not there is no error.
    await bounded(node_a.write(tagged(1, publication=None)))


@pytest_twisted.ensureDeferred
async def test_publication_bytes_and_time_round_trip_exactly(
    make_any_store: AnyStoreFactory,
) -> None:
    store = await make_any_store()
    reader = await make_any_store("node-b")
    rng = random.Random(12)
    payloads = [
        b"",
        bytes(range(256)) * 3,  # NUL, high bytes, invalid UTF-8
        rng.randbytes(3 * 2**20 + 7),
        b"\x00" * 10 + b"end",
    ]
    for mark, payload in enumerate(payloads, start=1):
        published_at = T0 + mark / 3  # no short decimal form
        await bounded(store.write(tagged(mark, publication=payload, published_at=published_at)))
        [publication] = await bounded(reader.read_publications(exclude_node="node-b"))
        assert type(publication.payload) is bytes
        assert publication.payload == payload
        assert publication.published_at == published_at


@pytest_twisted.ensureDeferred
async def test_nodes_on_one_database_keep_separate_marks_and_publications(
    make_any_store: AnyStoreFactory,
) -> None:
    node_a = await make_any_store("node-a")
    node_b = await make_any_store("node-b")

    await bounded(node_a.write(tagged(7, (7, minute(0)), publication=b"a")))
    # node-b's tag 2 is new for node-b, whatever node-a committed.
    assert await bounded(node_b.write(tagged(2, (2, minute(0)), publication=b"b"))) == 1
    assert await bounded(node_b.write(tagged(2, (2, minute(0))))) == 0

    assert await bounded(node_a.read_mark()) == 7
    assert await bounded(node_b.read_mark()) == 2
    assert await stored_counts(node_a) == {("events", T0, "node-a"): 1, ("events", T0, "node-b"): 1}
    assert await bounded(node_b.read_publications(exclude_node="node-b")) == [
        Publication("node-a", T0, b"a")
    ]
    assert await bounded(node_a.read_publications(exclude_node="node-a")) == []


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (tagged(3, (0, minute(0))), "tag 0, outside 1..3"),
        (tagged(3, (1, minute(0)), (4, minute(1))), "tag 4, outside 1..3"),
        (tagged(-1), "mark must be in"),
        (tagged(MAX_MARK + 1), "mark must be in"),
        (tagged(1, published_at=math.nan), "published_at must be a finite time"),
        (batch_of(published_at=math.inf), "published_at must be a finite time"),
        (tagged(1, (1, window({"events": counter(1)}, resolution=0.5))), "whole seconds"),
    ],
    ids=[
        "tag-0",
        "tag-above-mark",
        "negative-mark",
        "mark-beyond-bigint",
        "nan-time",
        "infinite-time-without-mark",
        "sub-second-window",
    ],
)
@pytest_twisted.ensureDeferred
async def test_an_invalid_batch_is_refused_and_writes_nothing(
    make_any_store: AnyStoreFactory, batch: FlushBatch, message: str
) -> None:
    store = await make_any_store()
    reader = await make_any_store("node-b")
    valid = [(1, minute(5))]
    invalid = FlushBatch(
        windows=[*valid, *batch.windows],
        totals={"total": counter(1)},
        mark=batch.mark,
        publication=b"p",
        published_at=batch.published_at,
    )

    with pytest.raises(ValueError, match=message):
        await bounded(store.write(invalid))

    assert await bounded(store.read_mark()) == 0
    assert await stored_counts(store) == {}
    assert await bounded(store.load_totals()) == {}
    assert await bounded(reader.read_publications(exclude_node="node-b")) == []


@pytest_twisted.ensureDeferred
async def test_totals_are_taken_when_written_not_when_the_write_completes(
    make_any_store: AnyStoreFactory,
) -> None:
    # The flush hands the store the live all-time metrics: they keep changing after write().
    store = await make_any_store()
    live = counter(5, 5)
    written = store.write(batch_of([], {"total_events": live}))
    live.increment(T0 + 1, 100.0)
    await bounded(written)
    totals = await bounded(store.load_totals())
    assert (totals["total_events"].value, totals["total_events"].count) == (5, 5)

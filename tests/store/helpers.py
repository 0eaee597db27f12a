"""Helpers for the store tests: bounded awaits, windows, and raw SQL beside the store."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from twisted_rta.aggregation.metrics import Counter, Metric, Unique
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.store.interface import FlushBatch

T = TypeVar("T")

# 2024-01-01T00:00:00Z: a minute and hour boundary.
T0 = 1_704_067_200
TIMEOUT = 10


def bounded(deferred: Deferred[T]) -> Deferred[T]:
    """pytest-twisted has no timeouts: a Deferred that never fires must not hang the run."""
    # Imported here: conftest imports this module before pytest-twisted installs its reactor.
    from twisted.internet import reactor

    return deferred.addTimeout(TIMEOUT, reactor)


def window(
    metrics: Mapping[str, Metric], start: float = T0, resolution: float = 60, late: bool = False
) -> ClosedWindow:
    return ClosedWindow(resolution, start, start + resolution, metrics, late)


def batch_of(
    windows: Sequence[ClosedWindow] = (),
    totals: Mapping[str, Metric] | None = None,
    *,
    mark: int | None = None,
    tag: int | None = None,
    publication: bytes | None = None,
    published_at: float = T0,
) -> FlushBatch:
    """A batch of ``windows`` all tagged ``tag`` (default: ``mark``, or 0 without one)."""
    if tag is None:
        tag = 0 if mark is None else mark
    return FlushBatch(
        windows=[(tag, w) for w in windows],
        totals={} if totals is None else totals,
        mark=mark,
        publication=publication,
        published_at=published_at,
    )


def counter(value: float, count: int = 1, updated_at: float = T0) -> Counter:
    return Counter(value=value, count=count, updated_at=updated_at)


def users(*members: str, now: float = T0) -> Unique:
    unique = Unique()
    for member in members:
        unique.add(member, now)
    return unique


def _raw_sql(url: str, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:"):
        connection = sqlite3.connect(urlsplit(url).path)
        try:
            with connection:  # commits
                return connection.execute(statement, params).fetchall()
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(url) as connection:
        cursor = connection.execute(statement.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def raw_sql(url: str, statement: str, *params: Any) -> Deferred[list[tuple[Any, ...]]]:
    """Run ``statement`` on its own connection beside the store (in a thread, committed)."""
    return bounded(deferToThread(_raw_sql, url, statement, params))

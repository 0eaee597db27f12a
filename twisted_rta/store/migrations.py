"""Versioned schema migrations, each applied in its own transaction and recorded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen

from twisted_rta.store.dialects import Dialect, lock_key
from twisted_rta.store.interface import SchemaTooNewError

MIGRATIONS_TABLE = "rta_schema_migrations"
# Every node opening the same database takes this lock, so only one applies a migration.
MIGRATION_LOCK = lock_key("twisted-rta:schema-migrations")


def schema_too_new(found: int, known: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"database schema version {found} is newer than this twisted-rta knows ({known}); "
        "upgrade twisted-rta"
    )


@frozen
class Migration:
    version: int
    description: str
    statements: Callable[[Dialect], Sequence[str]]


def _create_metric_windows(dialect: Dialect) -> Sequence[str]:
    # Every key includes metric, so the table can be distributed by metric (Citus).
    return (
        f"""CREATE TABLE rta_metric_windows (
            metric {dialect.key_text_type} NOT NULL,
            resolution INTEGER NOT NULL,
            window_start BIGINT NOT NULL,
            node_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            state {dialect.blob_type} NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (metric, resolution, window_start, node_id)
        )""",
        # Range reads and retention scan by time, not by metric.
        "CREATE INDEX rta_metric_windows_by_time ON rta_metric_windows (resolution, window_start)",
    )


def _create_marks_and_publications(dialect: Dialect) -> Sequence[str]:
    # One row per node, read and written only by that node (plus the other nodes' reads of
    # the publications). Keyed by node_id alone, not metric: under Citus they become
    # reference tables (create_reference_table), or tables distributed by node_id; either
    # may share a transaction with rta_metric_windows.
    return (
        # The highest checkpoint mark whose flush this node committed (issue 12).
        """CREATE TABLE rta_node_marks (
            node_id TEXT PRIMARY KEY,
            mark BIGINT NOT NULL CHECK (mark >= 0)
        )""",
        # This node's live windows as a blob other nodes merge into their answers.
        f"""CREATE TABLE rta_publications (
            node_id TEXT PRIMARY KEY,
            published_at DOUBLE PRECISION NOT NULL,
            payload {dialect.blob_type} NOT NULL
        )""",
    )


def _create_visitor_salts(dialect: Dialect) -> Sequence[str]:
    # The secret salt of each rotation period of the cookieless visitor id (issue 15): in
    # the store so every node derives the same id for a visitor, whichever node it reaches.
    # A few rows keyed by period_start alone, written once per period and read by every
    # node: under Citus a reference table (create_reference_table), which may share a
    # transaction with rta_metric_windows.
    return (
        # period_start: epoch seconds of the period's start. A salt is never updated: the
        # first node to store one for a period wins (INSERT ... ON CONFLICT DO NOTHING).
        f"""CREATE TABLE rta_visitor_salts (
            period_start BIGINT PRIMARY KEY,
            salt {dialect.blob_type} NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create rta_metric_windows", _create_metric_windows),
    Migration(2, "create rta_node_marks and rta_publications", _create_marks_and_publications),
    Migration(3, "create rta_visitor_salts", _create_visitor_salts),
)


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [migration.version for migration in migrations]
    if not versions or versions[0] < 1 or versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be positive and increasing, got {versions}")


def _applied_versions(cursor: Any) -> set[int]:
    cursor.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")
    return {int(row[0]) for row in cursor.fetchall()}


def migrate(
    connection: Any,
    dialect: Dialect,
    now: float,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> list[Migration]:
    """Apply the missing ``migrations`` on a DB-API ``connection``; return those applied.

    Blocking: run it in the database thread pool. Each migration commits on its own, so a
    failure leaves every earlier one applied and the next attempt resumes after it.
    """
    _check_order(migrations)
    latest = migrations[-1].version
    cursor = connection.cursor()
    try:
        dialect.begin_exclusive(cursor, MIGRATION_LOCK)
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = _applied_versions(cursor)
        connection.commit()
        if applied and max(applied) > latest:
            raise schema_too_new(max(applied), latest)
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            dialect.begin_exclusive(cursor, MIGRATION_LOCK)
            # Another node may have applied it while we waited for the lock.
            if migration.version in _applied_versions(cursor):
                connection.commit()
                continue
            for statement in migration.statements(dialect):
                cursor.execute(statement)
            cursor.execute(
                dialect.sql(f"INSERT INTO {MIGRATIONS_TABLE} (version, applied_at) VALUES (?, ?)"),
                (migration.version, now),
            )
            connection.commit()
            done.append(migration)
        return done
    finally:
        cursor.close()

"""A fresh PostgreSQL database per test (skipped where there is none, unless required)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import NoReturn

from tests.environment import missing

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/{name}"


def postgres_unreachable(error: object) -> NoReturn:
    """Skip (a failure where RTA_REQUIRE_ENVIRONMENT=1, see tests/environment.py)."""
    missing(f"PostgreSQL not reachable on 127.0.0.1:5432: {error}")


def admin(statement: str, name: str) -> None:
    """Run one statement with ``{}`` replaced by the quoted database name, autocommit."""
    import psycopg
    from psycopg import sql

    query = sql.SQL(statement).format(sql.Identifier(name))
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(query)


def create_postgres_database(name: str) -> None:
    admin("CREATE DATABASE {}", name)


def drop_postgres_database(name: str) -> None:
    admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def postgres_database() -> Iterator[str]:
    """Yield the URL of a new empty database; drop it afterwards."""
    try:
        import psycopg
    except ImportError as error:
        postgres_unreachable(error)
    name = f"rta_test_{secrets.token_hex(6)}"
    try:
        create_postgres_database(name)
    except psycopg.OperationalError as error:
        postgres_unreachable(error)
    try:
        yield POSTGRES_URL.format(name=name)
    finally:
        drop_postgres_database(name)

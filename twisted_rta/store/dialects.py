"""SQL dialects (SQLite, PostgreSQL): placeholders, column types, locks and connect settings."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen

SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_WAL_RETRY_S = 0.01
POSTGRES_CONNECT_TIMEOUT_S = 10


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@frozen
class Dialect:
    """What differs between the databases; all SQL is written with ``?`` placeholders."""

    name: str
    placeholder: str
    blob_type: str
    # PostgreSQL compares TEXT with the database collation, which may ignore punctuation;
    # byte order ("C") keeps the metric-name prefix ranges exact. SQLite compares bytes already.
    key_text_type: str
    # SQLite runs in autocommit mode (so DDL is transactional and reads take no lock) and
    # opens write transactions itself; IMMEDIATE takes the write lock before reading.
    begin: str | None
    # Serialises writers that share a key (migrations, one node's read-merge-write) across
    # connections and processes; SQLite's single writer lock already does.
    advisory_lock: str | None

    def sql(self, query: str) -> str:
        """``query`` with this dialect's placeholder; queries hold no literal ``?`` or ``%``."""
        return query if self.placeholder == "?" else query.replace("?", self.placeholder)

    def begin_exclusive(self, cursor: Any, key: int) -> None:
        """Start a transaction that no other writer holding ``key`` runs concurrently."""
        if self.begin is not None:
            cursor.execute(self.begin)
        if self.advisory_lock is not None:
            cursor.execute(self.sql(self.advisory_lock), (key,))


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    blob_type="BLOB",
    key_text_type="TEXT",
    begin="BEGIN IMMEDIATE",
    advisory_lock=None,
)

POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    blob_type="BYTEA",
    key_text_type='TEXT COLLATE "C"',
    begin=None,
    advisory_lock="SELECT pg_advisory_xact_lock(?)",
)


def _no_preparation() -> None:
    return None


@frozen
class ConnectionSettings:
    """How to build the adbapi pool for one database URL."""

    dialect: Dialect
    dbapi_module: str
    connect_args: tuple[Any, ...]
    connect_kwargs: Mapping[str, Any]
    min_connections: int
    max_connections: int
    # Blocking setup run in the pool before the first connection (creating directories).
    prepare: Callable[[], None] = _no_preparation
    on_connect: Callable[[Any], None] | None = None
    # For logs: never contains a password.
    description: str = ""


def _sqlite_use_wal(connection: sqlite3.Connection) -> None:
    # Switching a fresh file to WAL needs an exclusive lock, and SQLite reports BUSY at once
    # instead of calling the busy handler when another connection is setting it up too.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(SQLITE_WAL_RETRY_S)


def _sqlite_on_connect(connection: sqlite3.Connection) -> None:
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL lets readers run beside the writer; NORMAL is durable across application crashes
    # under WAL (only an OS crash may lose the last commits) and much cheaper than FULL.
    _sqlite_use_wal(connection)
    connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_settings(url: str) -> ConnectionSettings:
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"sqlite URL takes no host ({parts.netloc!r}): use sqlite:///absolute/path "
            "or sqlite:relative/path"
        )
    if parts.query or parts.fragment:
        raise ValueError("sqlite URL takes no query or fragment: use sqlite:///absolute/path")
    path = unquote(parts.path)
    if not path:
        raise ValueError("sqlite URL has no file path: use sqlite:///absolute/path")

    def create_parent() -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    return ConnectionSettings(
        dialect=SQLITE,
        dbapi_module="sqlite3",
        connect_args=(path,),
        # adbapi closes connections from the reactor thread on shutdown; isolation_level None
        # hands transaction control to Dialect.begin.
        connect_kwargs={"check_same_thread": False, "isolation_level": None},
        # SQLite has a single writer: one connection serialises all work and so never
        # meets "database is locked" from our own pool.
        min_connections=1,
        max_connections=1,
        prepare=create_parent,
        on_connect=_sqlite_on_connect,
        description=f"sqlite:{path}",
    )


def _postgresql_settings(url: str, max_connections: int) -> ConnectionSettings:
    # Imported here so SQLite deployments need not install psycopg.
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as e:
        # libpq quotes the URL in some messages; keep a password out of logs.
        reason = str(e).replace(url, "<url>")
        raise ValueError(f"invalid postgresql URL: {reason}") from None
    defaults = {
        "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
        "application_name": "twisted-rta",
    }
    extra = {key: value for key, value in defaults.items() if key not in params}
    host = params.get("host", "")
    port = params.get("port", "")
    dbname = params.get("dbname", "")
    return ConnectionSettings(
        dialect=POSTGRESQL,
        dbapi_module="psycopg",
        connect_args=(url,),
        connect_kwargs=extra,
        min_connections=1,
        max_connections=max_connections,
        description=f"postgresql://{host}:{port}/{dbname}",
    )


def settings_from_url(url: str, *, max_connections: int) -> ConnectionSettings:
    """Connection settings for a ``sqlite:`` or ``postgresql:``/``postgres:`` URL."""
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return _sqlite_settings(url)
    if scheme in ("postgresql", "postgres"):
        return _postgresql_settings(url, max_connections)
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///absolute/path/rta.sqlite3 "
        "or postgresql://user@host:5432/dbname"
    )

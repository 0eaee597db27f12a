"""SQL dialects (SQLite, PostgreSQL): placeholders, column types, locks and connect settings."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen

from twisted_rta.store.lease import AdvisoryLockLease, FileLease, Lease, lock_key

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "ConnectionSettings",
    "Dialect",
    "MissingDriverError",
    "lock_key",
    "settings_from_url",
]

SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_WAL_RETRY_S = 0.01
POSTGRES_CONNECT_TIMEOUT_S = 10


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
    # Appended to a SELECT inside a write transaction to lock the rows it reads until the
    # commit; SQLite has no row locks (BEGIN IMMEDIATE holds the database's write lock).
    for_update: str

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
    for_update="",
)

POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    blob_type="BYTEA",
    key_text_type='TEXT COLLATE "C"',
    begin=None,
    advisory_lock="SELECT pg_advisory_xact_lock(?)",
    for_update=" FOR UPDATE",
)


class MissingDriverError(ValueError):
    """The URL names a database whose driver (an optional extra) is not installed."""


def _no_preparation() -> None:
    return None


def _no_lease() -> Lease:
    raise NotImplementedError("these settings have no node-id lease")


def _nothing_permanent(error: BaseException) -> str | None:
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
    # A new node-id lease on this database (blocking calls; see lease.py).
    make_lease: Callable[[], Lease] = _no_lease
    # Why ``error`` (raised while opening) will not go away by retrying, or None if it may.
    permanent_reason: Callable[[BaseException], str | None] = _nothing_permanent


# SQLSTATEs that retrying cannot fix: class 28 (invalid authorization: wrong password, no
# such role), 3D000 (no such database), 3F000 (no such schema), 42501 (insufficient
# privilege, e.g. CREATE on schema public).
_PERMANENT_SQLSTATES = frozenset({"28000", "28P01", "3D000", "3F000", "42501"})
# libpq reports a refused connection without an SQLSTATE: the server's FATAL text tells.
_PERMANENT_CONNECT_MESSAGES = re.compile(
    r"password authentication failed|authentication failed for user|role \S+ does not exist"
    r"|database \S+ does not exist|no pg_hba\.conf entry|permission denied for database"
    r"|no password supplied|password must be provided",
    re.IGNORECASE,
)


def _postgresql_permanent_reason(error: BaseException) -> str | None:
    sqlstate = getattr(error, "sqlstate", None)
    message = str(error).strip()
    if sqlstate is None and not _PERMANENT_CONNECT_MESSAGES.search(message):
        return None
    if sqlstate is not None and sqlstate not in _PERMANENT_SQLSTATES:
        return None
    # "connection failed: connection to server at ... failed: FATAL:  <reason>": the reason.
    reason = re.split(r"FATAL:\s*", message)[-1].splitlines()[0].strip()
    return f"{reason} (SQLSTATE {sqlstate})" if sqlstate else reason


def _sqlite_permanent_reason(error: BaseException) -> str | None:
    if isinstance(error, PermissionError):
        return str(error)
    if isinstance(error, sqlite3.OperationalError) and (
        "readonly database" in str(error) or "unable to open database file" in str(error)
    ):
        return str(error)
    return None


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
        make_lease=lambda: FileLease(path),
        permanent_reason=_sqlite_permanent_reason,
    )


def _postgresql_settings(url: str, max_connections: int) -> ConnectionSettings:
    # Imported here so SQLite deployments need not install psycopg.
    try:
        import psycopg
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise MissingDriverError(
            "PostgreSQL needs the psycopg package: pip install 'twisted-rta[postgresql]'"
        ) from None

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
    extra: dict[str, Any] = {key: value for key, value in defaults.items() if key not in params}
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
        make_lease=lambda: AdvisoryLockLease(
            lambda: psycopg.connect(url, autocommit=True, **extra)
        ),
        permanent_reason=_postgresql_permanent_reason,
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

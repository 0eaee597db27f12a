"""Node-id leases: one live process per node id and store, so no two overwrite each other's rows.

All-time totals are keyed by node id and overwritten at every flush: two processes with one
id would silently replace each other's counts. A lease is held for the process lifetime and
dies with the process (kill -9 included): a session advisory lock on PostgreSQL, an flock on
a file beside the SQLite database. Every call here blocks; the store runs them in its pool.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted_rta.store.interface import NodeIdHeldError

# Processes sharing a default id (reuseport: one per core) take host:port, host:port/2, ...
DEFAULT_NODE_ID_SLOTS = 64


class Lease(Protocol):
    def try_acquire(self, node_id: str) -> bool:
        """Take the lease on ``node_id``; False when a live process holds it."""

    def release(self) -> None:
        """Give up whatever lease is held; idempotent."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def node_id_candidates(node_id: str, slots: int) -> tuple[str, ...]:
    """``node_id`` itself, then ``node_id/2`` ... ``node_id/<slots>``: stable across restarts."""
    if slots < 1:
        raise ValueError(f"node id slots must be at least 1, got {slots}")
    return (node_id, *(f"{node_id}/{slot}" for slot in range(2, slots + 1)))


def acquire_node_id(lease: Lease, candidates: Sequence[str]) -> str:
    """The first candidate whose lease could be taken; NodeIdHeldError when none."""
    for node_id in candidates:
        if lease.try_acquire(node_id):
            return node_id
    lease.release()
    advice = "give each process its own --node-id"
    if len(candidates) == 1:
        raise NodeIdHeldError(
            f"node id {candidates[0]!r} is already held by a live process on this store ({advice})"
        )
    raise NodeIdHeldError(
        f"every default node id from {candidates[0]!r} to {candidates[-1]!r} is held by a "
        f"live process on this store ({advice})"
    )


def lock_file_path(database: str, node_id: str) -> str:
    """``rta.sqlite3.<node id>.<hash>.lock`` beside the database.

    The readable part keeps only safe characters; the hash keeps ids that differ only in
    the replaced characters ("a:1" and "a_1") from sharing a file.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", node_id)[:64]
    digest = hashlib.blake2b(node_id.encode(), digest_size=4).hexdigest()
    return f"{database}.{safe}.{digest}.lock"


class FileLease:
    """An exclusive flock on a per-node-id file beside the SQLite database.

    The file is never deleted: unlinking it while another process has it open but not yet
    locked would let both "hold" the lease on different files.
    """

    def __init__(self, database: str) -> None:
        self._database = database
        self._fd: int | None = None

    def try_acquire(self, node_id: str) -> bool:
        self.release()
        fd = os.open(lock_file_path(self._database, node_id), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock


class AdvisoryLockLease:
    """A PostgreSQL session advisory lock, held on a connection of its own (not the pool's,
    whose connections are shared and replaced), released when it closes."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._connection: Any = None
        self._key: int | None = None

    def try_acquire(self, node_id: str) -> bool:
        try:
            return self._try_acquire(node_id)
        except BaseException:
            self.release()  # a broken connection: the next attempt connects afresh
            raise

    def _try_acquire(self, node_id: str) -> bool:
        if self._connection is None:
            self._connection = self._connect()
        elif self._key is not None:
            self._connection.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            self._key = None
        # Not the key of the per-write transaction lock (twisted-rta:node:...), which the
        # same node's pool connections take while this session holds the lease.
        key = lock_key(f"twisted-rta:lease:{node_id}")
        row = self._connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row and row[0]:
            self._key = key
            return True
        return False

    def release(self) -> None:
        connection, self._connection, self._key = self._connection, None, None
        if connection is not None:
            connection.close()  # the server drops the session's advisory locks

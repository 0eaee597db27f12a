"""fsync of the journal's files, off the reactor thread, one round at a time (group commit).

A round runs in ``run_in_thread``: it fsyncs and closes the fds of segments rolled since the
last round, fsyncs the active segment, and fsyncs the directory when a segment file was
created or removed. At most one round runs at a time, and only rounds close fds, so closing
a rolled segment never races an fsync of it.

Waiters (``wait(seq)``) fire once a round that started after ``seq`` was written has
completed: a round covers every record written when it started. A waiter arriving while a
round runs is covered by it when its record was written before the round started, otherwise
it waits for the next round, which starts as soon as the running one ends. So N waiters that
arrive together cost one or two fsyncs, not N. A failed round errbacks the waiters it covered
with ``JournalWriteError`` and is logged; the next round retries whatever is still unsynced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rta.journal.errors import JournalWriteError
from twisted_rta.journal.segments import fsync_directory

log = Logger()

T = TypeVar("T")
RunInThread = Callable[[Callable[[], T]], Deferred[T]]

# fdatasync flushes the data and the metadata needed to read it back (the file size): all a
# journal needs, without the inode timestamps. Not every platform has it.
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


@define
class FileSyncer:
    """fsyncs for one journal: its active fd, rolled fds waiting to be closed, its directory."""

    run_in_thread: RunInThread[Any]
    directory: Path
    fd: int  # the active segment's, written on the reactor thread
    written: int = 0  # seq of the last record written to ``fd`` (the journal keeps it current)
    synced: int = 0  # every record through this one is on disk
    rounds: int = 0  # completed rounds
    failures: int = 0  # failed rounds
    last_error: str | None = None
    _started_through: int = 0  # ``written`` when the last round started
    _retired: list[int] = field(factory=list)
    _directory_dirty: bool = False
    _running: bool = False
    _waiting: list[Deferred[None]] = field(factory=list)  # for the next round
    _covered: list[Deferred[None]] = field(factory=list)  # by the running round
    _closing: bool = False
    _closed: bool = False
    _close_waiters: list[Deferred[None]] = field(factory=list)
    _close_error: JournalWriteError | None = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def dirty(self) -> bool:
        """Something was written, rolled or created since the last round started."""
        return self.written > self._started_through or bool(self._retired) or self._directory_dirty

    def switch(self, fd: int) -> None:
        """``fd`` is the new active segment's (just created): the old one is synced and closed
        by the next round, and the directory is synced with it."""
        self._retired.append(self.fd)
        self.fd = fd
        self._directory_dirty = True

    def directory_changed(self) -> None:
        """A segment file was removed: the next round syncs the directory."""
        self._directory_dirty = True

    def wait(self, seq: int) -> Deferred[None]:
        """Fires once record ``seq`` (already written) is on disk."""
        if seq <= self.synced:
            return succeed(None)
        if self._closed:
            return fail(JournalWriteError("the journal is closed"))
        waiter: Deferred[None] = Deferred()
        if self._running and seq <= self._started_through:
            self._covered.append(waiter)
        else:
            self._waiting.append(waiter)
            if not self._running:
                self._start_round()
        return waiter

    def tick(self) -> None:
        """The interval policy's periodic fsync: a round when there is something to sync."""
        if not self._running and not self._closing and self.dirty:
            self._start_round()

    def close(self) -> Deferred[None]:
        """A last round that also closes the active fd, after the running one; fires with
        its outcome. No round starts after it."""
        waiter: Deferred[None] = Deferred()
        if self._closed:
            if self._close_error is not None:
                return fail(self._close_error)
            return succeed(None)
        self._close_waiters.append(waiter)
        if not self._closing:
            self._closing = True
            if not self._running:
                self._start_round()
        return waiter

    def _start_round(self) -> None:
        final = self._closing
        target = self.written
        retired, self._retired = self._retired, []
        directory = self._directory_dirty
        self._directory_dirty = False
        self._covered, self._waiting = self._waiting, []
        self._started_through = target
        self._running = True
        job = partial(
            sync_files,
            retired,
            self.fd,
            str(self.directory) if directory else None,
            close_active=final,
        )
        self.run_in_thread(job).addBoth(self._round_done, target, directory, final)

    def _round_done(self, result: object, target: int, directory: bool, final: bool) -> None:
        self._running = False
        covered, self._covered = self._covered, []
        error: JournalWriteError | None = None
        if isinstance(result, Failure):
            self.failures += 1
            reason = result.getErrorMessage() or repr(result.value)
            self.last_error = reason
            error = JournalWriteError(f"fsync of the journal failed: {reason}")
            self._directory_dirty = self._directory_dirty or directory
            self._started_through = self.synced  # the next round retries
            log.error(
                "journal: fsync failed ({reason}); {waiters} waiters told",
                reason=reason,
                waiters=len(covered),
            )
        else:
            self.rounds += 1
            self.last_error = None
            self.synced = max(self.synced, target)
        if final:
            self._closed = True
            self._close_error = error
            covered += self._waiting
            self._waiting = []
        for waiter in covered:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)
        if final:
            done, self._close_waiters = self._close_waiters, []
            for waiter in done:
                if error is None:
                    waiter.callback(None)
                else:
                    waiter.errback(error)
        elif not self._running and (self._closing or self._waiting):
            self._start_round()


def sync_files(
    retired: Sequence[int], active: int, directory: str | None, *, close_active: bool
) -> None:
    """One round, in a thread: fsync and close ``retired``, fsync ``active`` (and close it
    when ``close_active``), fsync ``directory``. Every fd is closed even when an fsync fails;
    the first error is raised at the end."""
    errors: list[OSError] = []
    for fd in retired:
        _attempt(errors, _datasync, fd)
        _attempt(errors, os.close, fd)
    _attempt(errors, _datasync, active)
    if close_active:
        _attempt(errors, os.close, active)
    if directory is not None:
        _attempt(errors, fsync_directory, directory)
    if errors:
        raise errors[0]


def _attempt(errors: list[OSError], call: Callable[[Any], None], argument: Any) -> None:
    try:
        call(argument)
    except OSError as error:
        errors.append(error)

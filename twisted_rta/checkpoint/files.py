"""CheckpointFiles: checkpoints on disk, written atomically and durably off the reactor thread.

Checkpoint ``mark`` lives in ``checkpoint-<mark, 12 digits>.ckpt``. A save writes
``.checkpoint-<mark>.ckpt.tmp``, fsyncs it, renames it into place and fsyncs the directory, so
a crash leaves either the old set of files or the new one, plus at most a temporary file that
is never read and is deleted by the next load or save. Then all but two checkpoints go: the
one just saved and the newest below it (the fallback if the newest is ever found damaged).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.checkpoint.codec import Checkpoint, CorruptCheckpoint, decode_checkpoint

log = Logger()

_NAME = re.compile(r"checkpoint-(\d+)\.ckpt")
_TEMP = re.compile(r"\.checkpoint-\d+\.ckpt\.tmp")


def checkpoint_name(mark: int) -> str:
    return f"checkpoint-{mark:012d}.ckpt"


class CheckpointFiles:
    """The checkpoints of one node in ``directory`` (created by the first save).

    ``run_in_thread(f)`` runs ``f`` in a thread and fires its Deferred with the result on
    the reactor thread (``deferToThreadPool`` partially applied). ``last_saved_at`` is
    ``clock.seconds()`` when the last successful save completed (the wall clock without a
    ``clock``). Saves run one at a time, in the order they were asked for.
    """

    def __init__(
        self,
        directory: Path,
        *,
        run_in_thread: Callable[[Callable[[], None]], Deferred[None]],
        clock: IReactorTime | None = None,
    ) -> None:
        self.directory = directory
        self.last_saved_at: float | None = None
        self._run_in_thread = run_in_thread
        self._seconds: Callable[[], float] = clock.seconds if clock is not None else time.time
        self._lock = DeferredLock()

    # -- start-up -------------------------------------------------------------------------

    def load_latest(self) -> Checkpoint | None:
        """The newest intact checkpoint (synchronous: for start-up), or None when there is
        none. A damaged or unreadable one is logged and the one before it tried; leftover
        temporary files are deleted."""
        if not self.directory.is_dir():
            return None
        self._remove_temporaries()
        for mark, path in sorted(self._checkpoints().items(), reverse=True):
            try:
                checkpoint = decode_checkpoint(path.read_bytes())
                if checkpoint.mark != mark:
                    raise CorruptCheckpoint(f"file of mark {mark} holds mark {checkpoint.mark}")
            except (OSError, CorruptCheckpoint) as e:
                log.error(
                    "checkpoint {path} is unusable ({reason}); trying the one before",
                    path=str(path),
                    reason=str(e),
                )
                continue
            return checkpoint
        return None

    # -- each flush -----------------------------------------------------------------------

    def save(self, data: bytes, mark: int) -> Deferred[None]:
        """Write ``data`` (an encoded checkpoint) as checkpoint ``mark``, atomically and
        durably, in a thread; then delete every other checkpoint but the newest one below
        ``mark`` (so also any above it: a checkpoint that was not resumed from is stale).
        Fires with None when the checkpoint is durable; fails with the OSError otherwise,
        leaving the checkpoints as they were."""
        if mark < 0:
            raise ValueError(f"checkpoint mark must be >= 0, got {mark}")

        def write() -> Deferred[None]:
            return self._run_in_thread(lambda: self._write(data, mark))

        saved: Deferred[None] = self._lock.run(write)
        saved.addCallback(self._saved)
        return saved

    def _saved(self, _: None) -> None:
        self.last_saved_at = self._seconds()

    # -- in the thread --------------------------------------------------------------------

    def _write(self, data: bytes, mark: int) -> None:
        created = not self.directory.is_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        if created:
            _fsync_directory(self.directory.parent)
        final = self.directory / checkpoint_name(mark)
        temporary = self.directory / f".{final.name}.tmp"
        try:
            with temporary.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        self._prune(mark)

    def _prune(self, mark: int) -> None:
        marks = self._checkpoints()
        older = [other for other in marks if other < mark]
        keep = {mark, max(older)} if older else {mark}
        for other, path in marks.items():
            if other not in keep:
                path.unlink(missing_ok=True)
        self._remove_temporaries()

    # -- both -----------------------------------------------------------------------------

    def _checkpoints(self) -> dict[int, Path]:
        found: dict[int, Path] = {}
        for path in self.directory.iterdir():
            match = _NAME.fullmatch(path.name)
            if match is not None:
                found[int(match.group(1))] = path
        return found

    def _remove_temporaries(self) -> None:
        for path in self.directory.iterdir():
            if _TEMP.fullmatch(path.name):
                path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

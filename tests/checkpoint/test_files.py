"""CheckpointFiles on real files: atomic durable saves off the reactor, the newest two kept,
a damaged newest checkpoint passed over, leftovers of a crash ignored and cleaned."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twisted_rta.checkpoint.codec import Checkpoint, encode_checkpoint
from twisted_rta.checkpoint.files import CheckpointFiles, checkpoint_name


def data(mark: int) -> bytes:
    return encode_checkpoint(Checkpoint(mark, mark * 10, (), "node", float(mark), {"m": mark}, ()))


def inline(f: Callable[[], None]) -> Deferred[None]:
    """Run ``f`` now (the tests' stand-in for a thread pool)."""
    return maybeDeferred(f)


def in_a_thread(f: Callable[[], None]) -> Deferred[None]:
    """Run ``f`` in a real thread and wait for it."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            f()
            outcome.append(None)
        except BaseException as e:
            outcome.append(Failure(e))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    [result] = outcome
    return fail(result) if isinstance(result, Failure) else succeed(result)


def saved(files: CheckpointFiles, mark: int) -> None:
    results: list[Any] = []
    files.save(data(mark), mark).addBoth(results.append)
    assert results == [None]


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_nothing_to_load(tmp_path: Path) -> None:
    assert CheckpointFiles(tmp_path / "missing", run_in_thread=inline).load_latest() is None
    assert CheckpointFiles(tmp_path, run_in_thread=inline).load_latest() is None


def test_save_in_a_thread_then_load_the_latest(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "checkpoints"  # made by the first save
    files = CheckpointFiles(directory, run_in_thread=in_a_thread)
    saved(files, 1)
    saved(files, 2)
    checkpoint = CheckpointFiles(directory, run_in_thread=inline).load_latest()
    assert checkpoint is not None
    assert (checkpoint.mark, checkpoint.covers_seq, checkpoint.aggregator) == (2, 20, {"m": 2})


def test_the_write_happens_in_run_in_thread_and_saves_run_one_at_a_time(tmp_path: Path) -> None:
    held: list[tuple[Callable[[], None], Deferred[None]]] = []

    def hold(f: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        held.append((f, d))
        return d

    files = CheckpointFiles(tmp_path, run_in_thread=hold)
    first, second = files.save(data(1), 1), files.save(data(2), 2)
    assert len(held) == 1 and names(tmp_path) == []  # nothing written on the caller's thread
    f, d = held.pop()
    f()
    assert names(tmp_path) == [checkpoint_name(1)]
    assert held == []  # the second waits for the first to finish
    d.callback(None)
    assert len(held) == 1
    f, d = held.pop()
    f()
    d.callback(None)
    results: list[Any] = []
    first.addBoth(results.append)
    second.addBoth(results.append)
    assert results == [None, None]
    assert names(tmp_path) == [checkpoint_name(1), checkpoint_name(2)]


def test_only_the_newest_two_are_kept(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    for mark in range(1, 6):
        saved(files, mark)
    assert names(tmp_path) == [checkpoint_name(4), checkpoint_name(5)]


def test_a_lower_mark_replaces_stale_higher_ones(tmp_path: Path) -> None:
    # A node that could not resume from checkpoints 7 and 8 starts again at 1: they are stale.
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    for mark in (7, 8):
        saved(files, mark)
    saved(files, 1)
    assert names(tmp_path) == [checkpoint_name(1)]
    latest = files.load_latest()
    assert latest is not None and latest.mark == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: raw[:30] + bytes([raw[30] ^ 1]) + raw[31:],  # a flipped bit
        lambda raw: b"",
    ],
    ids=["truncated", "flipped", "empty"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    saved(files, 1)
    saved(files, 2)
    newest = tmp_path / checkpoint_name(2)
    newest.write_bytes(damage(newest.read_bytes()))
    latest = files.load_latest()
    assert latest is not None and latest.mark == 1
    # the next save (mark 2 again) replaces the damaged one, and 1 stays as the fallback
    saved(files, 2)
    latest = files.load_latest()
    assert latest is not None and latest.mark == 2
    assert names(tmp_path) == [checkpoint_name(1), checkpoint_name(2)]


def test_every_checkpoint_damaged_is_none(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    saved(files, 1)
    (tmp_path / checkpoint_name(1)).write_bytes(b"junk")
    assert files.load_latest() is None


def test_a_file_holding_another_mark_is_not_used(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    saved(files, 1)
    (tmp_path / checkpoint_name(2)).write_bytes(data(9))
    latest = files.load_latest()
    assert latest is not None and latest.mark == 1


def test_a_leftover_temporary_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    saved(files, 1)
    leftover = tmp_path / f".{checkpoint_name(2)}.tmp"  # a crash mid-write of checkpoint 2
    leftover.write_bytes(data(2)[:10])
    latest = files.load_latest()
    assert latest is not None and latest.mark == 1
    assert not leftover.exists()
    leftover.write_bytes(data(3))  # complete, but never renamed: still not a checkpoint
    saved(files, 2)
    assert names(tmp_path) == [checkpoint_name(1), checkpoint_name(2)]
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("kept")
    files.load_latest()
    assert unrelated.exists()


def test_save_is_atomic_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    clock.advance(100)
    files = CheckpointFiles(tmp_path, run_in_thread=inline, clock=clock)
    saved(files, 1)
    assert files.last_saved_at == 100

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    clock.advance(5)
    results: list[Any] = []
    files.save(data(2), 2).addBoth(results.append)
    [failure] = results
    assert isinstance(failure, Failure) and failure.check(OSError)
    assert names(tmp_path) == [checkpoint_name(1)]  # no temporary left, 1 untouched
    assert files.last_saved_at == 100
    monkeypatch.undo()
    clock.advance(5)
    saved(files, 2)  # and saving works again
    assert files.last_saved_at == 110


def test_save_fsyncs_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "directory" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"
        calls.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    saved(CheckpointFiles(tmp_path, run_in_thread=inline), 1)
    assert calls == ["fsync file", "rename", "fsync directory"]


def test_last_saved_at_defaults_to_the_wall_clock(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path, run_in_thread=inline)
    assert files.last_saved_at is None
    saved(files, 1)
    assert files.last_saved_at is not None and files.last_saved_at > 1_600_000_000


def test_a_negative_mark_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mark"):
        CheckpointFiles(tmp_path, run_in_thread=inline).save(b"", -1)

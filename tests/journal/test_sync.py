"""fsync off the reactor thread: group commit under ``always``, the periodic fsync under
``interval``, failures told to the waiters, fds closed only by fsync rounds."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from tests.journal.helpers import (
    ManualThread,
    batch,
    event,
    open_fds_under,
    open_journal,
    run_now,
)
from twisted_rta.journal.log import Journal, JournalWriteError

T = TypeVar("T")
TIMEOUT = 10


def failure_of(waiter: Deferred[Any]) -> BaseException:
    caught: list[BaseException] = []

    def keep(failure: Failure) -> None:
        assert failure.value is not None
        caught.append(failure.value)

    waiter.addErrback(keep)
    assert caught, "the waiter did not fail"
    return caught[0]


def test_many_waiters_are_satisfied_by_one_fsync(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always")
    seqs = [journal.append([event(number)]) for number in range(50)]
    waiters = [journal.durable(seq) for seq in seqs]
    assert thread.started == 1
    assert not any(waiter.called for waiter in waiters)
    thread.finish()
    assert all(waiter.called and waiter.result is None for waiter in waiters)
    assert (journal.fsyncs, journal.synced_seq, thread.pending) == (1, 50, [])
    assert journal.durable(seqs[0]).called  # already on disk: no new fsync
    assert thread.started == 1


def test_waiters_arriving_during_an_fsync_get_the_next_one(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always")
    first = journal.durable(journal.append([event(1)]))
    second = journal.durable(journal.append([event(2)]))
    third = journal.durable(journal.append([event(3)]))
    late_for_first = journal.durable(1)  # written before the running fsync started
    assert thread.started == 1

    thread.finish()
    assert first.called and late_for_first.called
    assert not second.called and not third.called
    assert thread.started == 2  # the next fsync started at once

    thread.finish()
    assert second.called and third.called
    assert (journal.fsyncs, thread.most_at_once) == (2, 1)


def test_the_fsync_count_stays_bounded_under_a_steady_stream(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always")
    waiters = []
    for number in range(1, 201):
        waiters.append(journal.durable(journal.append([event(number)])))
        if number % 10 == 0:  # an fsync takes as long as ten appends
            thread.finish()
    thread.finish_all()
    assert all(waiter.called for waiter in waiters)
    assert thread.most_at_once == 1
    assert journal.fsyncs <= 21
    assert journal.synced_seq == 200


def test_a_failed_fsync_fails_its_waiters_and_the_next_one_retries(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always")
    seqs = [journal.append([event(number)]) for number in range(3)]
    waiters = [journal.durable(seq) for seq in seqs]
    thread.finish(error=OSError(errno.EIO, os.strerror(errno.EIO)))
    for waiter in waiters:
        error = failure_of(waiter)
        assert isinstance(error, JournalWriteError)
        assert "Input/output error" in str(error)
    assert (journal.fsync_failures, journal.synced_seq) == (1, 0)
    assert any("fsync failed" in entry.get("log_format", "") for entry in captured_logs)

    again = journal.durable(3)
    assert thread.started == 2
    thread.finish()
    assert again.called and again.result is None
    assert journal.synced_seq == 3


def test_a_cancelled_waiter_is_left_out_harmlessly(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always")
    waiter = journal.durable(journal.append([event(1)]))
    other = journal.durable(1)
    waiter.cancel()
    assert isinstance(failure_of(waiter), CancelledError)
    thread.finish()
    assert other.called and other.result is None


def test_the_interval_policy_fsyncs_periodically_and_not_when_idle(tmp_path: Path) -> None:
    clock = Clock()
    jobs: list[Callable[[], Any]] = []

    def counting(job: Callable[[], T]) -> Deferred[T]:
        jobs.append(job)
        return run_now(job)

    journal = open_journal(tmp_path, clock, counting, policy="interval", fsync_interval=0.2)
    journal.start()
    clock.advance(1.0)
    assert jobs == []  # nothing written: no fsync

    seq = journal.append([event(1)])
    assert journal.durable(seq).called
    clock.advance(0.1)
    assert (len(jobs), journal.synced_seq) == (0, 0)
    clock.advance(0.1)
    assert (len(jobs), journal.synced_seq) == (1, 1)
    clock.advance(2.0)
    assert len(jobs) == 1  # idle again

    journal.append([event(2)])
    journal.append([event(3)])
    clock.advance(0.2)
    assert (len(jobs), journal.synced_seq) == (2, 3)

    journal.stop()
    journal.append([event(4)])
    clock.advance(1.0)
    assert len(jobs) == 2
    closed = journal.close()
    assert closed.called and len(jobs) == 3 and journal.synced_seq == 4


def test_the_interval_fsync_waits_for_the_running_one(tmp_path: Path) -> None:
    clock = Clock()
    thread = ManualThread()
    journal = open_journal(tmp_path, clock, thread, policy="interval", fsync_interval=0.2)
    journal.start()
    journal.append([event(1)])
    clock.advance(0.2)
    journal.append([event(2)])
    clock.advance(0.6)  # the first fsync still runs: no second one beside it
    assert (thread.started, thread.most_at_once) == (1, 1)
    thread.finish()
    clock.advance(0.2)
    assert thread.started == 2
    thread.finish()
    assert journal.synced_seq == 2
    journal.stop()


def test_rolled_segments_are_fsynced_and_closed_by_the_next_round(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always", segment_bytes=1024)
    for number in range(40):
        journal.append(batch(number, 2))
    assert journal.segment_count > 3
    assert len(open_fds_under(tmp_path)) == journal.segment_count  # rolled, not yet closed
    waiter = journal.durable(journal.last_seq)
    thread.finish()
    assert waiter.called
    active = sorted(tmp_path.glob("*.journal"))[-1]
    assert open_fds_under(tmp_path) == [str(active.resolve())]


def test_close_fires_pending_waiters_and_closes_every_fd(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always", segment_bytes=512)
    first = journal.durable(journal.append(batch(1, 3)))
    for number in range(10):
        journal.append(batch(number, 3))
    second = journal.durable(journal.last_seq)
    closed = journal.close()
    thread.finish()
    assert first.called and not second.called and not closed.called
    assert thread.started == 2  # the final round, after the running one
    thread.finish()
    assert second.called and second.result is None
    assert closed.called and closed.result is None
    assert open_fds_under(tmp_path) == []
    assert journal.durable(journal.last_seq).called
    with pytest.raises(JournalWriteError, match="closed"):
        journal.append([event(1)])
    assert journal.close().called  # twice is fine


def test_a_failed_final_fsync_fails_close_but_closes_the_fds(tmp_path: Path) -> None:
    thread = ManualThread()
    journal = open_journal(tmp_path, run_in_thread=thread, policy="always")
    journal.append([event(1)])
    closed = journal.close()
    thread.finish(error=OSError(errno.EIO, os.strerror(errno.EIO)))
    assert isinstance(failure_of(closed), JournalWriteError)
    assert open_fds_under(tmp_path) == []


def bounded(deferred: Deferred[T]) -> Deferred[T]:
    from twisted.internet import reactor

    return deferred.addTimeout(TIMEOUT, reactor)


@pytest_twisted.ensureDeferred
async def test_group_commit_with_the_real_reactor_and_a_thread(tmp_path: Path) -> None:
    from twisted.internet import reactor

    journal = Journal.open(
        tmp_path, clock=reactor, run_in_thread=deferToThread, policy="always", segment_bytes=8192
    )
    written = {}
    waiters: list[Deferred[None]] = []
    for wave in range(10):
        for number in range(20):
            events = batch(wave * 100 + number, 5)
            seq = journal.append(events)
            written[seq] = events
            waiters.append(journal.durable(seq))
        await bounded(deferLater(reactor, 0, lambda: None))  # let fsyncs come and go
    await bounded(gatherResults(waiters))
    assert 1 <= journal.fsyncs <= 11
    assert journal.synced_seq == 200
    await bounded(journal.close())
    assert open_fds_under(tmp_path) == []

    again = Journal.open(tmp_path, clock=reactor, run_in_thread=deferToThread)
    assert dict(again.replay(0)) == written
    await bounded(again.close())


@pytest_twisted.ensureDeferred
async def test_the_interval_fsync_with_the_real_reactor_and_a_thread(tmp_path: Path) -> None:
    from twisted.internet import reactor

    journal = Journal.open(
        tmp_path, clock=reactor, run_in_thread=deferToThread, fsync_interval=0.01
    )
    journal.start()
    journal.append(batch(1, 10))
    for _ in range(500):
        if journal.synced_seq == 1:
            break
        await bounded(deferLater(reactor, 0.01, lambda: None))
    assert journal.synced_seq == 1
    await bounded(journal.close())
    assert open_fds_under(tmp_path) == []

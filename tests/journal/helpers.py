"""Helpers for the journal tests: thread stand-ins, realistic events, open fds."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from twisted_rta.events.model import Event
from twisted_rta.journal.log import Journal

T = TypeVar("T")

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def run_now(job: Callable[[], T]) -> Deferred[T]:
    """A synchronous stand-in for deferToThread."""
    try:
        return succeed(job())
    except Exception as error:
        return fail(error)


class ManualThread:
    """A stand-in for deferToThread whose jobs run only when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.started = 0
        self.most_at_once = 0

    def __call__(self, job: Callable[[], T]) -> Deferred[T]:
        waiting: Deferred[T] = Deferred()
        self.pending.append((job, waiting))
        self.started += 1
        self.most_at_once = max(self.most_at_once, len(self.pending))
        return waiting

    def finish(self, error: OSError | None = None) -> None:
        """Run the oldest job; with ``error``, report that instead of its outcome."""
        job, waiting = self.pending.pop(0)
        try:
            result = job()
        except Exception as raised:
            waiting.errback(raised)
            return
        if error is not None:
            waiting.errback(error)
        else:
            waiting.callback(result)

    def finish_all(self) -> None:
        while self.pending:
            self.finish()


def event(number: int, **properties: Any) -> Event:
    return Event(
        id=f"evt-{number:08d}",
        type="purchase" if number % 7 == 0 else "page_view",
        timestamp=T0 + number * 0.001,
        user_id=f"user-{number % 97}" if number % 5 else None,
        session_id=f"session-{number % 31}",
        properties={"path": f"/products/{number}", "amount": number / 4, **properties},
    )


def batch(start: int, size: int) -> tuple[Event, ...]:
    return tuple(event(number) for number in range(start, start + size))


def open_journal(
    directory: Path,
    clock: Clock | None = None,
    run_in_thread: Callable[[Callable[[], Any]], Deferred[Any]] = run_now,
    **options: Any,
) -> Journal:
    return Journal.open(directory, clock=clock or Clock(), run_in_thread=run_in_thread, **options)


def open_fds_under(directory: Path) -> list[str]:
    """The files under ``directory`` this process holds open (Linux /proc)."""
    found = []
    prefix = str(directory.resolve())
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return sorted(found)


def segment_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.journal"))

"""Long query work on the reactor thread, cut into slices of a few milliseconds.

A query over tens of thousands of metrics (the all-metrics list, a breakdown of 10,000 pages)
is written as a generator that yields after each bounded step. ``Slicer.run`` does the first
step at once, so a small answer costs no extra reactor turn, and hands the rest to a
``Cooperator`` scheduled on the injected clock, which gives the reactor back once a tick has
worked ``budget`` seconds: ingest requests and the workers run between the slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator

# Work per reactor turn: a slice ends after the first step past it (a step is ~0.5 ms).
SLICE_SECONDS = 0.003
# Items per step: names listed, metric views built, values summed, rows merged.
STEP_ITEMS = 256
T = TypeVar("T")


@define
class StepBudget:
    """Counts the items a generator has worked through and says when to yield: check
    ``due()`` before each piece of work, so a generator never yields after its last."""

    items: int = STEP_ITEMS
    _spent: int = field(init=False, default=0)

    def spend(self, items: int) -> None:
        self._spent += items

    def due(self) -> bool:
        """True (and a fresh step begins) once ``items`` items were spent."""
        if self._spent < self.items:
            return False
        self._spent = 0
        return True

    def steps(self, items: Iterable[T], work: Callable[[list[T]], None]) -> Iterator[None]:
        """``work`` on ``items`` a chunk of ``STEP_ITEMS`` at a time, yielding between steps
        when this budget is spent (never after the last)."""
        source = iter(items)
        while True:
            chunk = [item for _, item in zip(range(STEP_ITEMS), source, strict=False)]
            if not chunk:
                return
            if self.due():
                yield None
            work(chunk)
            self.spend(len(chunk))


@define
class Slicer:
    """Runs step generators: the first step inline, the rest on ``cooperator``."""

    cooperator: Cooperator

    @classmethod
    def on(
        cls,
        clock: IReactorTime,
        *,
        budget: float = SLICE_SECONDS,
        timer: Callable[[], float] = time.perf_counter,
    ) -> Slicer:
        """Slices of about ``budget`` seconds of work (measured with ``timer``, a CPU
        stopwatch, not the clock), each scheduled with ``clock.callLater(0, ...)``."""

        def slice_timer() -> Callable[[], bool]:
            deadline = timer() + budget
            return lambda: timer() >= deadline

        return cls(
            Cooperator(
                terminationPredicateFactory=slice_timer,
                scheduler=lambda work: clock.callLater(0, work),
            )
        )

    def run(self, steps: Iterator[object]) -> Deferred[None]:
        """Fires when ``steps`` is exhausted (or with its exception)."""
        try:
            next(steps)
        except StopIteration:
            return succeed(None)
        except Exception:
            return fail()
        done = self.cooperator.cooperate(steps).whenDone()
        return done.addCallback(lambda _: None)

"""The cost of event de-duplication (issue 16), in process: memory per id, time per event.

    .venv/bin/python benchmarks/dedup.py [--ids 1000000] [--batch 100] [--runs 5]
        [--events 200000] [--seed 1] [--quick]

What the daemon's ``RecentIds`` (twisted_rta/ingest/dedup.py) costs, with ids as SDKs send
them (UUID strings, 36 characters):

- **memory per remembered id**: ``--ids`` ids remembered in batches of ``--batch`` over one
  horizon (24h, so all ``SLICES`` slices are filled and nothing expires), measured twice: the
  growth of the Python heap (tracemalloc, its own run) and the growth of the process's RSS
  (``VmRSS`` in /proc/self/status, a run without tracemalloc);
- **per event, what intake does** (``Intake.take``: ``screen`` then ``remember``), in
  batches of ``--batch``, for ``--events`` events, best of ``--runs``: events with given ids
  (all new; into an empty set and into a full one, ``max_ids = --ids``, where each
  ``remember`` also evicts), the same events resent (all left out), and events with drawn ids
  (``id_given`` false: never hashed, never remembered). The Event objects are built untimed;
  the times are of the reactor thread's CPU (``time.thread_time``);
- **the checkpoint's part**: ``export()`` and ``restore()`` of ``--ids`` ids, their size as
  exported, and what they add to a checkpoint (encoded every flush tick on the reactor
  thread, decoded at start): bytes and encoding time over an otherwise empty checkpoint.

``--quick`` is a smoke run (100,000 ids, 20,000 events, 2 runs). Nothing here is part of the
test run.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from twisted_rta.checkpoint.codec import (
    Checkpoint,
    decode_checkpoint,
    encode_checkpoint_and_publication,
)
from twisted_rta.events.model import Event
from twisted_rta.ingest.dedup import SLICES, RecentIds, id_digest

HORIZON = 86_400.0  # the default dedup.horizon
START = 1_795_748_400.0


def uuids(rng: random.Random, count: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (not Linux?)")


def fill(recent: RecentIds, ids: Sequence[str], batch: int) -> None:
    """Remember ``ids`` as intake would, in batches, spread over one horizon."""
    step = HORIZON / max(len(ids), 1)
    for first in range(0, len(ids), batch):
        chunk = ids[first : first + batch]
        recent.remember([id_digest(event_id) for event_id in chunk], START + first * step)


def memory_per_id(ids: Sequence[str], batch: int) -> tuple[float, float, int]:
    """(heap bytes per id by tracemalloc, RSS bytes per id, slices filled)."""
    gc.collect()
    before = rss_bytes()
    recent = RecentIds(HORIZON, len(ids))
    fill(recent, ids, batch)
    gc.collect()
    rss = (rss_bytes() - before) / len(ids)
    slices = len(recent.export())
    assert recent.count == len(ids) and recent.evicted == 0, "ids went missing"
    del recent
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        recent = RecentIds(HORIZON, len(ids))
        fill(recent, ids, batch)
        gc.collect()
        heap = (tracemalloc.get_traced_memory()[0] - base) / len(ids)
    finally:
        tracemalloc.stop()
    assert recent.count == len(ids)
    return heap, rss, slices


def batches(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    return [events[first : first + size] for first in range(0, len(events), size)]


def take_cost(
    make: Callable[[], RecentIds], requests: list[Sequence[Event]], runs: int, resend: bool
) -> tuple[float, int]:
    """Best us/event of ``screen`` + ``remember`` over ``requests`` (after taking them all
    once, untimed, when ``resend``), and the duplicates found in the last run."""
    best = float("inf")
    duplicates = 0
    events = sum(len(request) for request in requests)
    for _ in range(runs):
        recent = make()
        now = START + HORIZON
        if resend:
            for request in requests:
                recent.remember(recent.screen(request, now).digests, now)
        gc.collect()
        duplicates = 0
        began = time.thread_time()
        for request in requests:
            screened = recent.screen(request, now)
            recent.remember(screened.digests, now)
            duplicates += screened.duplicates
        spent = time.thread_time() - began
        best = min(best, spent / events * 1e6)
    return best, duplicates


def full(ids: Sequence[str], batch: int) -> Callable[[], RecentIds]:
    """A maker of sets already at ``max_ids`` (filled once, then copied through export)."""
    template = RecentIds(HORIZON, len(ids))
    fill(template, ids, batch)
    exported = template.export()

    def make() -> RecentIds:
        recent = RecentIds(HORIZON, len(ids))
        recent.restore(exported, START + HORIZON)
        return recent

    return make


def checkpoint_part(ids: Sequence[str], batch: int, runs: int) -> dict[str, float]:
    recent = RecentIds(HORIZON, len(ids))
    fill(recent, ids, batch)
    export_s = restore_s = float("inf")
    exported = recent.export()
    for _ in range(runs):
        began = time.perf_counter()
        exported = recent.export()
        export_s = min(export_s, time.perf_counter() - began)
        back = RecentIds(HORIZON, len(ids))
        gc.collect()
        began = time.perf_counter()
        back.restore(exported, START + HORIZON)
        restore_s = min(restore_s, time.perf_counter() - began)
        assert back.count == recent.count, "restore lost ids"
    # What the ids add to each checkpoint (taken every flush tick, encoded on the reactor
    # thread): an otherwise empty one, with and without them.
    encode_s = {True: float("inf"), False: float("inf")}
    decode_s = float("inf")
    frames = {}
    for _ in range(runs):
        for with_ids in (False, True):
            checkpoint = Checkpoint(
                mark=1,
                covers_seq=1,
                applied_beyond=(),
                node_id="bench",
                taken_at=START,
                aggregator={},
                pending=(),
                recent_ids=exported if with_ids else (),
            )
            began = time.perf_counter()
            frames[with_ids] = encode_checkpoint_and_publication(checkpoint)[0]
            encode_s[with_ids] = min(encode_s[with_ids], time.perf_counter() - began)
        began = time.perf_counter()
        decoded = decode_checkpoint(frames[True])
        decode_s = min(decode_s, time.perf_counter() - began)
        assert decoded.recent_ids == exported
    return {
        "export_ms": export_s * 1000,
        "restore_ms": restore_s * 1000,
        "exported_bytes": sum(len(data) for _, data in exported),
        "checkpoint_bytes": len(frames[True]) - len(frames[False]),
        "encode_ms": (encode_s[True] - encode_s[False]) * 1000,
        "decode_ms": decode_s * 1000,
        "slices": len(exported),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids remembered")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--events", type=int, default=200_000, help="timed events per run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs (the best is printed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.ids, args.events, args.runs = 100_000, 20_000, 2
    rng = random.Random(args.seed)
    print(
        f"Python {sys.version.split()[0]}; {args.ids:,} UUID ids over a {HORIZON / 3600:g}h "
        f"horizon ({SLICES} slices), requests of {args.batch}"
    )
    ids = uuids(rng, args.ids)

    heap, rss, slices = memory_per_id(ids, args.batch)
    print(f"\nmemory per remembered id ({args.ids:,} ids, {slices} slices):")
    print(f"  heap (tracemalloc)   {heap:7.1f} bytes  ({heap * args.ids / 2**20:,.1f} MiB)")
    print(f"  RSS (VmRSS growth)   {rss:7.1f} bytes  ({rss * args.ids / 2**20:,.1f} MiB)")

    fresh_ids = uuids(rng, args.events)
    given = [Event(id=i, type="pageview", timestamp=START, id_given=True) for i in fresh_ids]
    drawn = [Event(id=i, type="pageview", timestamp=START) for i in fresh_ids]
    given_requests, drawn_requests = batches(given, args.batch), batches(drawn, args.batch)
    print(
        f"\nscreen + remember, us/event ({args.events:,} events in requests of {args.batch}, "
        f"best of {args.runs}; CPU time):"
    )

    def empty() -> RecentIds:
        return RecentIds(HORIZON, args.ids)

    cases = [
        ("given ids, new, into an empty set", empty, given_requests, False),
        (
            f"given ids, new, into a full set ({args.ids:,})",
            full(ids, args.batch),
            given_requests,
            False,
        ),
        ("given ids, all resent", empty, given_requests, True),
        ("drawn ids (id_given false)", empty, drawn_requests, False),
    ]
    for name, make, requests, resend in cases:
        cost, duplicates = take_cost(make, requests, args.runs, resend)
        expected = args.events if resend else 0
        assert duplicates == expected, (name, duplicates, expected)
        print(f"  {name:<44}{cost:8.3f}")
    began = time.thread_time()
    for event_id in fresh_ids:
        id_digest(event_id)
    digest_us = (time.thread_time() - began) / len(fresh_ids) * 1e6
    print(f"  {'(of which id_digest alone)':<44}{digest_us:8.3f}")

    part = checkpoint_part(ids, args.batch, args.runs)
    print(f"\ncheckpoint part ({args.ids:,} ids, {part['slices']} slices, best of {args.runs}):")
    print(f"  export()             {part['export_ms']:8.1f} ms")
    print(f"  restore()            {part['restore_ms']:8.1f} ms")
    print(f"  exported digests     {part['exported_bytes'] / 2**20:8.2f} MiB")
    print(f"  + checkpoint bytes   {part['checkpoint_bytes'] / 2**20:8.2f} MiB")
    print(f"  + checkpoint encode  {part['encode_ms']:8.1f} ms (each flush tick)")
    print(f"  checkpoint decode    {part['decode_ms']:8.1f} ms (at start, before restore())")


if __name__ == "__main__":
    main()

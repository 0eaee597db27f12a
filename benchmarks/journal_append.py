"""The raw cost of the journal: appends/s and events/s on real files, fsync in a real thread.

    .venv/bin/python benchmarks/journal_append.py [--duration 2] [--dir PATH] [--clients 64]

For batches of 1 and 100 realistic events:

- ``interval``: appends back to back on the reactor thread while the periodic fsync runs
  in a thread every 0.2 s (what ``journal.fsync: interval`` costs the ingest path);
- ``always``: N concurrent "requests", each appending and then waiting for ``durable()``
  before the next (group commit: one fsync covers every record written before it started),
  with 1 client (the fsync latency) and ``--clients`` clients.

Plus the encoding alone (``encode_events``), in microseconds per event. The journal lives in
a temporary directory under ``--dir`` (default: the system's); its file system decides what an
fsync costs, so it is printed too (a tmpfs makes fsync free and the figures meaningless for
disks). Nothing here is part of the test run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread

from twisted_rta.events.model import Event
from twisted_rta.journal.log import Journal
from twisted_rta.journal.records import encode_events

KEEP_BYTES = 128 << 20  # release (delete segments) past this, as the checkpointer would


def realistic(count: int, start: float) -> tuple[Event, ...]:
    """Events like the daemon's ingest benchmarks send: a page view or a purchase."""
    events = []
    for number in range(count):
        purchase = number % 10 == 0
        events.append(
            Event(
                id=f"{number:08x}-4b1e-4c2a-9d3f-{int(start * 1000) + number:012x}",
                type="purchase" if purchase else "page_view",
                timestamp=start + number * 0.001,
                user_id=f"user-{number % 1000}",
                session_id=f"session-{number % 300:04d}",
                properties=(
                    {"amount": 49.99, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]}
                    if purchase
                    else {"path": f"/products/{number % 500}", "referrer": "https://example.com/"}
                ),
            )
        )
    return tuple(events)


def encode_cost(size: int) -> float:
    """Microseconds per event to encode batches of ``size``."""
    events = realistic(size, time.time())
    rounds = max(20_000 // size, 200)
    started = time.perf_counter()
    for _ in range(rounds):
        encode_events(events)
    return (time.perf_counter() - started) / (rounds * size) * 1e6


def file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (Linux /proc/mounts), or "unknown"."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    best = ("", "unknown")
    for fields in mounts:
        point, kind = fields[1], fields[2]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, kind)
    return best[1]


def keep_bounded(journal: Journal) -> None:
    if journal.size_bytes > KEEP_BYTES:
        journal.release_through(journal.last_seq)


async def interval(reactor: Any, directory: Path, size: int, duration: float) -> dict[str, Any]:
    journal = Journal.open(directory, clock=reactor, run_in_thread=deferToThread, max_bytes=1 << 40)
    journal.start()
    events = realistic(size, reactor.seconds())
    appends = 0
    busy = 0.0
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(200):
            journal.append(events)
        busy += time.perf_counter() - started
        appends += 200
        keep_bounded(journal)
        await deferLater(reactor, 0, lambda: None)  # let finished fsyncs report back
    fsyncs = journal.fsyncs
    await journal.close()
    return {"appends": appends, "seconds": duration, "busy": busy, "fsyncs": fsyncs}


async def always(
    reactor: Any, directory: Path, size: int, duration: float, clients: int
) -> dict[str, Any]:
    journal = Journal.open(
        directory, clock=reactor, run_in_thread=deferToThread, policy="always", max_bytes=1 << 40
    )
    events = realistic(size, reactor.seconds())
    counted = [0]
    busy = [0.0]
    deadline = time.perf_counter() + duration

    async def client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            seq = journal.append(events)
            busy[0] += time.perf_counter() - started
            counted[0] += 1
            await journal.durable(seq)
            keep_bounded(journal)

    started = time.perf_counter()
    await gatherResults([ensureDeferred(client()) for _ in range(clients)])
    seconds = time.perf_counter() - started
    fsyncs = journal.fsyncs
    await journal.close()
    return {"appends": counted[0], "seconds": seconds, "busy": busy[0], "fsyncs": fsyncs}


def row(policy: str, size: int, clients: str, result: dict[str, Any]) -> str:
    appends = result["appends"] / result["seconds"]
    per_append = result["busy"] / max(result["appends"], 1) * 1e6
    return (
        f"| {policy} | {size} | {clients} | {appends:,.0f} | {appends * size:,.0f} | "
        f"{per_append:.1f} | {result['fsyncs'] / result['seconds']:,.0f} |"
    )


async def run(reactor: Any, options: argparse.Namespace) -> None:
    base = Path(options.dir) if options.dir else Path(tempfile.gettempdir())
    print(f"journal in {base} ({file_system(base)}), {options.duration:g} s per case")
    for size in (1, 100):
        print(f"encode_events, batches of {size}: {encode_cost(size):.3f} us/event")
    print()
    print(
        "| policy | batch | clients | appends/s | events/s | us/append on the reactor | fsyncs/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in (1, 100):
        with tempfile.TemporaryDirectory(dir=base, prefix="rta-journal-") as scratch:
            result = await interval(reactor, Path(scratch), size, options.duration)
        print(row("interval", size, "-", result), flush=True)
    for size in (1, 100):
        for clients in sorted({1, options.clients}):
            with tempfile.TemporaryDirectory(dir=base, prefix="rta-journal-") as scratch:
                result = await always(reactor, Path(scratch), size, options.duration, clients)
            print(row("always", size, str(clients), result), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per case")
    parser.add_argument("--dir", help="where the temporary journals go (default: system tmp)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent requests (always)")
    options = parser.parse_args(argv)
    react(lambda reactor: ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()

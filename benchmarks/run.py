"""Benchmark suite of twisted-rta: real ``twistd -n rta`` processes loaded by wrk.

    .venv/bin/python benchmarks/run.py [--quick] [--scenario NAME ...] [--duration S]
                                            [--journal MODE ...] [--repeat N] [--workdir DIR]
                                            [--lane {fast,klein} | --compare]
                                            [--json PATH] [--install] [--no-pin]

    # the fast ingest lane against twisted.web/Klein, each scenario back to back:
    .venv/bin/python benchmarks/run.py --compare --scenario single --scenario batch1000

Run it with the Python of the virtual environment the daemon is installed in: the daemon is
started as the ``twistd`` next to that interpreter. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit.machine import apply_to_self, choose_pinning, describe_machine, filesystem_of
from benchkit.report import COMPARED_LANES, JsonLines, compare_tables, journal_table, table
from benchkit.scenarios import JOURNAL_MODES, LANES, SCENARIOS, Settings

BENCH_DIR = Path(__file__).resolve().parent
INSTALL_WRK = ["apt-get", "install", "-y", "wrk"]
DEFAULT_SCENARIOS = list(SCENARIOS)
# Scenarios without a daemon: the journal mode means nothing to them, they run once.
NO_DAEMON = {"generator-ceiling"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark a real twistd rta daemon with wrk (loopback only)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds per scenario, 200k events for memory"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=DEFAULT_SCENARIOS,
        metavar="NAME",
        help="repeatable; default: all of " + ", ".join(DEFAULT_SCENARIOS),
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="measured seconds of the timed scenarios (default 30, quick 3)",
    )
    parser.add_argument(
        "--memory-events",
        type=int,
        metavar="N",
        help="events of the memory scenario (default 10M, quick 200k)",
    )
    parser.add_argument(
        "--journal",
        action="append",
        choices=list(JOURNAL_MODES),
        metavar="MODE",
        help="repeatable: run each scenario once per journal mode (off, interval, always), "
        "back to back; default: the daemon's defaults (journal on, fsync interval)",
    )
    lanes = parser.add_mutually_exclusive_group()
    lanes.add_argument(
        "--lane",
        choices=list(LANES),
        default="fast",
        help="server.fast_lane of the daemons: fast (true, the default) or klein (false: "
        "twisted.web/Klein answers everything)",
    )
    lanes.add_argument(
        "--compare",
        action="store_true",
        help="run each scenario twice, back to back with the same settings: lane klein, then "
        "fast; print a table per scenario with the fast/klein ratios",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole sequence N times, interleaved (default 1)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where the temp dir of the daemons' data (store, journal) is made (default: the "
        "system's temp dir); its file system decides what an fsync costs",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="JSON lines output (default benchmarks/results/<time>.jsonl)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="install wrk with apt-get when it is missing (root only)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the daemon and wrk to separate cores"
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        metavar="N",
        help="wrk threads per wrk process (default 1: one core for load)",
    )
    options = parser.parse_args(argv)
    if options.duration is not None and options.duration < 1:
        parser.error("--duration must be at least 1 second (wrk's resolution)")
    if options.repeat < 1:
        parser.error("--repeat must be at least 1")
    if options.journal and len(set(options.journal)) != len(options.journal):
        parser.error("--journal: each mode once")
    return options


def find_wrk(install: bool) -> str:
    found = shutil.which("wrk")
    if found:
        return found
    command = " ".join(INSTALL_WRK)
    print(f"wrk is not on PATH. Install it with:\n    {command}", file=sys.stderr)
    if not install:
        print("(or rerun as root with --install to have this script run it)", file=sys.stderr)
        raise SystemExit(2)
    if os.geteuid() != 0:
        print("--install needs root", file=sys.stderr)
        raise SystemExit(2)
    print(f"running: {command}", flush=True)
    if subprocess.run(INSTALL_WRK, timeout=900, check=False).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], timeout=900, check=False)
        subprocess.run(INSTALL_WRK, timeout=900, check=False)
    found = shutil.which("wrk")
    if not found:
        print(f"{command} did not provide wrk", file=sys.stderr)
        raise SystemExit(2)
    return found


def find_twistd() -> str:
    twistd = Path(sys.executable).with_name("twistd")
    if not twistd.exists():
        print(
            f"no twistd next to {sys.executable}: run this script with the Python of the "
            "virtual environment where twisted-rta is installed",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return str(twistd)


def _terminate(signum: int, frame: object) -> None:
    # Unwind like Ctrl-C so every running daemon and wrk is stopped by its finally block.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    options = parse_args(argv)
    wrk = find_wrk(options.install)
    twistd = find_twistd()
    pinning = choose_pinning(not options.no_pin)
    machine = describe_machine(pinning, wrk, BENCH_DIR.parent)
    apply_to_self(pinning)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = JsonLines(options.json or BENCH_DIR / "results" / f"{stamp}.jsonl")
    names = options.scenario or DEFAULT_SCENARIOS
    modes: list[str | None] = list(options.journal or [None])
    lanes: list[str] = list(COMPARED_LANES) if options.compare else [options.lane]
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
    data_fs = filesystem_of(Path(options.workdir or tempfile.gettempdir()))
    machine["data_dir_filesystem"] = data_fs
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, {machine['wrk']}, git {machine['git']}"
    )
    print(f"pinning: {pinning.describe()}")
    print(f"scenarios: {', '.join(names)}{' (quick)' if options.quick else ''}", flush=True)
    print(
        f"journal: {', '.join(m for m in modes if m) if options.journal else 'daemon defaults'}"
        f"; data dirs on {data_fs}"
        + (f"; {options.repeat} repetitions" if options.repeat > 1 else ""),
        flush=True,
    )
    print(
        "lanes: klein (server.fast_lane: false), then fast (true), back to back"
        if options.compare
        else f"lane: {options.lane} (server.fast_lane: {str(LANES[options.lane]).lower()})",
        flush=True,
    )
    if data_fs.startswith("tmpfs") and "always" in modes:
        print("  WARNING: tmpfs makes fsync free: journal always means nothing here", flush=True)

    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rta-bench-", dir=options.workdir) as workdir:
        settings = Settings(
            duration_s=options.duration or (3.0 if options.quick else 30.0),
            warmup_s=1.0 if options.quick else 5.0,
            memory_events=options.memory_events or (200_000 if options.quick else 10_000_000),
            ceiling_s=options.duration or (3.0 if options.quick else 10.0),
            wrk_threads=options.wrk_threads,
            wrk=wrk,
            twistd=twistd,
            pinning=pinning,
            workdir=Path(workdir),
        )
        # The lanes innermost: both lanes of a scenario run back to back, on the same
        # machine state, so their ratio is the least disturbed figure of the run.
        runs = [
            (repetition, name, mode, lane)
            for repetition in range(1, options.repeat + 1)
            for name in names
            for mode in (modes if name not in NO_DAEMON else [None])
            for lane in (lanes if name not in NO_DAEMON else [None])
        ]
        for repetition, name, mode, lane in runs:
            title = name + (f" [journal {mode}]" if mode else "")
            if lane and (options.compare or lane != "fast"):
                title += f" [{lane}]"
            if options.repeat > 1:
                title += f" #{repetition}"
            print(f"running {title} ...", flush=True)
            started = time.monotonic()
            common = {
                "quick": options.quick,
                "started_at": datetime.now(UTC).isoformat(),
                "configured_duration_s": settings.duration_s,
                "warmup_s": settings.warmup_s,
                "wrk_threads": settings.wrk_threads,
                "repetition": repetition,
                "repetitions": options.repeat,
                # None: no daemon (generator-ceiling), no lane.
                "lane": lane,
                "compare": options.compare,
                "machine": machine,
            }
            try:
                scenario_settings = dataclasses.replace(settings, journal=mode, lane=lane or "fast")
                results = SCENARIOS[name](scenario_settings)
            except Exception as error:  # report it, keep running the other scenarios
                traceback.print_exc()
                results = [
                    {
                        "scenario": name,
                        "journal": mode or "default",
                        "error": f"{type(error).__name__}: {error}",
                    }
                ]
            results = [{**result, **common} for result in results]
            output.append(results)
            records.extend(results)
            print(f"  done in {time.monotonic() - started:.0f}s", flush=True)

    print()
    print(table(records))
    if options.journal and len(options.journal) > 1:
        print()
        baseline = "off" if "off" in options.journal else options.journal[0]
        print(journal_table(records, baseline))
    if options.compare:
        print()
        print(compare_tables(records))
    print(f"\nJSON lines: {output.path}")
    return 1 if any("error" in record for record in records) else 0


if __name__ == "__main__":
    sys.exit(main())

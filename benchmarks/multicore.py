"""Scaling over cores: N rta processes on one port sharing one SQLite store.

    .venv/bin/python benchmarks/multicore.py [--duration 20] [--processes 2] [--launch ...]

Runs batch-of-100 ingest with wrk against 1 process, then against N processes, and prints
events/s counted by the daemons. ``--launch supervisor`` (the default) starts one
``twistd rta --processes N`` (its children accept from one shared socket, on the cores the
supervisor is allowed, all of them here); ``--launch reuseport`` starts N separate
``twistd rta`` on a ``reuseport:`` port, each pinned to its own core. wrk shares the last
core. Events/s are
(the merged all-time total_events, after the queues drained and the totals were flushed)
and the scaling factor. On a 2-core machine wrk competes with the second daemon for a
core, so the factor understates what a machine with a spare core would show.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TWISTD = str(Path(sys.executable).with_name("twistd"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def total_events(port: int) -> float:
    try:
        body = get(f"http://127.0.0.1:{port}/api/v1/metrics/total_events")
    except urllib.error.HTTPError as error:
        if error.code == 404:  # no event yet
            return 0.0
        raise
    return float(body["data"]["value"])


def start(count: int, port: int, workdir: Path, launch: str) -> list[subprocess.Popen[bytes]]:
    config = workdir / "rta.yaml"
    config.write_text(
        f"store: {{data_dir: {workdir / 'data'}}}\n"
        "logging: {access_log: false, level: warn}\n"
        "rate_limits: {enabled: false}\n"
        "processing: {buffer_size: 200000}\n"
        "windows: {flush_interval: 1s}\n"
    )
    processes = []
    if launch == "supervisor":
        argv = [TWISTD, "-n", "--pidfile=", "rta", "-c", str(config)]
        argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", "--processes", str(count)]
        processes.append(
            subprocess.Popen(
                argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    for index in range(count if launch == "reuseport" else 0):
        cpu = index % os.cpu_count()  # type: ignore[operator]
        argv = [
            "taskset",
            "-c",
            str(cpu),
            TWISTD,
            "-n",
            "--pidfile=",
            "rta",
            "-c",
            str(config),
            "--listen",
            f"reuseport:{port}:interface=127.0.0.1",
            "--node-id",
            f"core-{index}",
        ]
        processes.append(
            subprocess.Popen(
                argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    deadline = time.monotonic() + 30
    ready = 0
    while time.monotonic() < deadline and ready < 3 * count:
        # Several answers in a row: with N processes any one of them may answer.
        try:
            ready = ready + 1 if get(f"http://127.0.0.1:{port}/ready")["status"] == "ready" else 0
        except OSError:
            ready = 0
            time.sleep(0.2)
    if ready < 3 * count:
        raise SystemExit("the daemons did not become ready")
    return processes


def run(count: int, duration: float, launch: str) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        processes = start(count, port, Path(scratch), launch)
        try:
            before = total_events(port)
            began = time.monotonic()
            wrk = [
                "taskset",
                "-c",
                str(os.cpu_count() - 1),
                "wrk",
                "-t",
                "2",
                "-c",
                "16",  # type: ignore[operator]
                "-d",
                f"{duration:g}s",
                "-s",
                str(HERE / "wrk" / "ingest.lua"),
                f"http://127.0.0.1:{port}",
                "--",
                "path=/api/v1/events/batch",
                "batch=100",
                "users=1000000",
                "sessions=200000",
                "pages=10000",
                "pool=200",
                "threads=2",
            ]
            subprocess.run(wrk, check=True, capture_output=True, timeout=duration + 60)
            loaded = time.monotonic() - began
            # Each process's total reaches the others at its next flush (1 s here).
            time.sleep(3)
            after = total_events(port)
            return (after - before) / loaded
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--launch", choices=("supervisor", "reuseport"), default="supervisor")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install -y wrk util-linux)")
    one = run(1, args.duration, args.launch)
    many = run(args.processes, args.duration, args.launch)
    cpu = re.sub(
        r"\s+",
        " ",
        next(
            (
                line.split(":", 1)[1]
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        ),
    ).strip()
    print(f"machine: {os.cpu_count()} CPUs ({cpu})")
    print(f"1 process:  {one:,.0f} events/s")
    print(
        f"{args.processes} processes ({args.launch}): {many:,.0f} events/s "
        f"(scaling x{many / one:.2f})"
    )
    print(
        json.dumps(
            {
                "scenario": "multicore",
                "launch": args.launch,
                "processes": args.processes,
                "events_per_s_1": round(one),
                "events_per_s_n": round(many),
                "scaling": round(many / one, 2),
            }
        )
    )


if __name__ == "__main__":
    main()

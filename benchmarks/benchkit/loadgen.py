"""wrk runs: command lines, concurrent processes, and the JSON their Lua done() prints."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit.machine import Pinning

WRK_DIR = Path(__file__).resolve().parent.parent / "wrk"


@dataclass(frozen=True)
class WrkJob:
    """One wrk process. ``args`` go to the Lua script (key=value after ``--``)."""

    name: str
    script: str
    connections: int
    args: dict[str, str | int]
    events_per_request: int = 1
    timeout_s: float = 10.0  # wrk's per-request timeout
    # Count-bounded runs (the Lua script stops its threads after a quota) still need a time
    # bound: duration_s is then the most the run may take.
    count_bounded: bool = False


@dataclass
class WrkResult:
    name: str
    requests: int
    duration_s: float
    ok_responses: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float | None]
    events_per_request: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> dict[str, int]:
        return {
            status: count
            for status, count in sorted(self.statuses.items())
            if not status.startswith("2")
        }

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_per_s": round(self.requests_per_s, 1),
            "ok_responses": self.ok_responses,
            # Client-side: what the 2xx answers vouch for. Daemon figures count events itself.
            "offered_events_ok": self.ok_responses * self.events_per_request,
            "latency_ms": self.latency_ms,
            "statuses": dict(sorted(self.statuses.items())),
            "non_2xx": self.non_2xx,
            "socket_errors": {k: v for k, v in self.socket_errors.items() if v},
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class LoadRun:
    """Results by job name, and the CPU time every wrk process of the run used."""

    results: dict[str, WrkResult]
    wrk_cpu_s: float

    def __getitem__(self, name: str) -> WrkResult:
        return self.results[name]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Running:
    job: WrkJob
    process: subprocess.Popen[str]
    deadline: float
    lines: list[str] = field(default_factory=list)
    stopped_threads: int = 0
    interrupted: bool = False
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("WRK_THREAD_STOPPED"):
                self.stopped_threads += 1
            self.lines.append(line.rstrip("\n"))


class WrkError(RuntimeError):
    pass


def wrk_argv(
    job: WrkJob, url: str, duration_s: float, threads: int, pinning: Pinning, wrk: str = "wrk"
) -> list[str]:
    script_args = [f"{key}={value}" for key, value in job.args.items()]
    return [
        *pinning.load_prefix(),
        wrk,
        "-t",
        str(threads),
        "-c",
        str(max(job.connections, threads)),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{job.timeout_s:g}s",
        "-s",
        str(WRK_DIR / job.script),
        url,
        "--",
        *script_args,
        f"threads={threads}",
    ]


def run_wrk(
    jobs: list[WrkJob],
    *,
    port: int,
    duration_s: float,
    pinning: Pinning,
    threads: int = 1,
    wrk: str = "wrk",
    on_tick: Callable[[], None] = lambda: None,
    tick_s: float = 0.25,
) -> LoadRun:
    """Run ``jobs`` at the same time against 127.0.0.1:port; ``on_tick`` runs while they do.

    Every run is bounded by wrk's own -d and, should wrk hang, by a hard deadline past it.
    """
    url = f"http://127.0.0.1:{port}"
    running: list[_Running] = []
    # The servers under test are reaped later: in this window the only children that end
    # (and add to RUSAGE_CHILDREN) are these wrk processes.
    cpu_before = _children_cpu_s()
    try:
        for job in jobs:
            argv = wrk_argv(job, url, duration_s, threads, pinning, wrk)
            process = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            run = _Running(job, process, time.monotonic() + duration_s + 30 + job.timeout_s)
            run.reader = threading.Thread(target=run.read, daemon=True)
            run.reader.start()
            running.append(run)
        while any(run.process.poll() is None for run in running):
            on_tick()
            for run in running:
                if run.process.poll() is not None:
                    continue
                # wrk's main thread sleeps until -d even when every thread stopped itself:
                # SIGINT makes it report at once (it handles SIGINT like the end of -d).
                if run.job.count_bounded and not run.interrupted and run.stopped_threads >= threads:
                    run.process.send_signal(signal.SIGINT)
                    run.interrupted = True
                if time.monotonic() > run.deadline:
                    run.process.kill()
                    raise WrkError(f"wrk {run.job.name} did not finish by its deadline")
            time.sleep(tick_s)
    finally:
        for run in running:
            if run.process.poll() is None:
                run.process.kill()
            run.process.wait(10)
            if run.reader is not None:
                run.reader.join(10)
    return LoadRun({run.job.name: _result(run) for run in running}, _children_cpu_s() - cpu_before)


def _result(run: _Running) -> WrkResult:
    payload = next(
        (line.removeprefix("WRK_JSON ") for line in run.lines if line.startswith("WRK_JSON ")), None
    )
    if payload is None or run.process.returncode not in (0, -signal.SIGINT):
        output = "\n".join(run.lines[-20:])
        raise WrkError(
            f"wrk {run.job.name} exited {run.process.returncode} without a result:\n{output}"
        )
    data = json.loads(payload)
    latency = data["latency_us"]
    return WrkResult(
        name=run.job.name,
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        ok_responses=int(data["ok_responses"]),
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        socket_errors={str(k): int(v) for k, v in data["errors"].items()},
        latency_ms={
            key: None if latency[key] is None else round(latency[key] / 1000, 3)
            for key in ("p50", "p90", "p99", "p999", "mean", "max")
        },
        events_per_request=run.job.events_per_request,
    )

"""The machine a run happened on, and which CPU the daemon and the load generator get."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pinning:
    """CPU for the server under test and CPU for wrk (and this harness); None: not pinned."""

    server_cpu: int | None
    load_cpu: int | None
    reason: str

    @property
    def enabled(self) -> bool:
        return self.server_cpu is not None

    def server_prefix(self) -> list[str]:
        return [] if self.server_cpu is None else ["taskset", "-c", str(self.server_cpu)]

    def load_prefix(self) -> list[str]:
        return [] if self.load_cpu is None else ["taskset", "-c", str(self.load_cpu)]

    def describe(self) -> str:
        if not self.enabled:
            return f"not pinned ({self.reason})"
        return f"server on CPU {self.server_cpu}, wrk and harness on CPU {self.load_cpu} (taskset)"


def choose_pinning(wanted: bool) -> Pinning:
    """Daemon and load generator on separate cores, so neither steals the other's CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if not wanted:
        return Pinning(None, None, "--no-pin")
    if len(cpus) < 2:
        return Pinning(None, None, f"only {len(cpus)} usable core")
    if shutil.which("taskset") is None:
        return Pinning(None, None, "taskset not found (apt-get install -y util-linux)")
    return Pinning(cpus[0], cpus[1], "")


def apply_to_self(pinning: Pinning) -> None:
    # The harness polls the daemon during runs: keep that work off the daemon's core.
    if pinning.load_cpu is not None:
        os.sched_setaffinity(0, {pinning.load_cpu})


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _git_revision(repo: Path) -> str:
    revision = _command_output(["git", "rev-parse", "--short", "HEAD"], repo)
    if not revision or " " in revision:
        return "unknown"
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"], repo)
    return revision + (" + uncommitted changes" if dirty else "")


def describe_machine(pinning: Pinning, wrk: str | None, repo: Path) -> dict[str, Any]:
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright ...": keep the name and version.
    wrk_version = " ".join(_command_output([wrk, "--version"]).split()[:2]) if wrk else "missing"
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "wrk": wrk_version,
        "pinning": pinning.describe(),
        "git": _git_revision(repo),
    }


def filesystem_of(path: Path) -> str:
    """``type (device)`` of the mount that holds ``path``: what an fsync there costs."""
    resolved = str(path.resolve())
    best, found = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, kind = fields[0], fields[1].replace("\\040", " "), fields[2]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, found = mount_point, f"{kind} ({device} on {mount_point})"
    return found

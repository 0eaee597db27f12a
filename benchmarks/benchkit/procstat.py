"""CPU time and memory of a running process, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of every thread of ``pid`` so far (the store's threads too)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count fields after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LookupError(f"{key} missing from /proc/{pid}/status")


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the resident set's high-water mark since the process started."""
    return _status_kib(pid, "VmHWM") / 1024


def core_busy_seconds(cpu: int | None) -> float:
    """Non-idle time of one CPU (all CPUs when None) since boot, from /proc/stat. Steal is
    counted as busy: time the hypervisor gave to someone else is lost to us too."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            # user nice system idle iowait irq softirq steal (guest time is inside user).
            ticks = [int(value) for value in fields[1:9]]
            return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS
    raise LookupError(f"{name} missing from /proc/stat")

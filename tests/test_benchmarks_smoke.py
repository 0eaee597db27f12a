"""The benchmark harness still runs end to end: one quick scenario against a real daemon.

It checks that figures come out, never how good they are (benchmarks/ never fails a test run
for being slow).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.environment import requires

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


requires_wrk = requires(
    shutil.which("wrk") is not None,
    "wrk is not installed (apt-get install -y wrk); the benchmark harness drives the daemon "
    "with it",
)


def run_harness(tmp_path: Path, *args: str) -> tuple[str, list[dict[str, Any]]]:
    """``benchmarks/run.py --quick --duration 2 ARGS``: its output and its JSON lines."""
    output = tmp_path / "bench.jsonl"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--quick",
        "--duration",
        "2",
        "--json",
        str(output),
        *args,
    ]
    # Own session: on timeout the whole group (harness, daemon, wrk) goes, not just run.py.
    harness = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, _ = harness.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(harness.pid, signal.SIGKILL)
        out, _ = harness.communicate()
        pytest.fail("benchmarks/run.py did not finish within 90 s:\n" + out)
    assert harness.returncode == 0, out
    return out, [json.loads(line) for line in output.read_text().splitlines()]


@requires_wrk
def test_quick_batch100_and_browser_report_figures(tmp_path: Path) -> None:
    _, records = run_harness(tmp_path, "--scenario", "batch100", "--scenario", "browser")
    assert [record["scenario"] for record in records] == ["batch100", "browser"]
    record, browser = records
    assert record["events_per_s"] > 0  # counted by the daemon itself
    assert record["requests_per_s"] > 0
    assert record["latency_p99_ms"] > 0
    assert record["daemon_exit"] == "clean"
    assert record["machine"]["nproc"] >= 1
    assert record["lane"] == "fast"  # server.fast_lane's default
    assert record["responses_503"] >= 0
    # Plausible hits through a trusted proxy: all counted, from many visitors.
    assert browser["events_per_s"] > 0 and browser["daemon_exit"] == "clean"
    assert browser["non_2xx"] == {}
    assert sum(browser["browser"]["dropped"].values()) == 0
    assert browser["browser"]["unique_visitors_estimate"] > 100


@requires_wrk
def test_quick_compare_runs_both_lanes(tmp_path: Path) -> None:
    out, records = run_harness(tmp_path, "--compare", "--scenario", "single")
    assert [(r["scenario"], r["lane"]) for r in records] == [
        ("single", "klein"),
        ("single", "fast"),
    ]
    assert all(r["events_per_s"] > 0 and r["daemon_exit"] == "clean" for r in records)
    assert "fast/klein" in out  # the ratio row of the comparison table

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

import pytest

from tests.environment import requires

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


@requires(
    shutil.which("wrk") is not None,
    "wrk is not installed (apt-get install -y wrk); the benchmark harness drives the daemon "
    "with it",
)
def test_quick_batch100_reports_figures(tmp_path: Path) -> None:
    output = tmp_path / "bench.jsonl"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--quick",
        "--scenario",
        "batch100",
        "--duration",
        "2",
        "--json",
        str(output),
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

    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["scenario"] for record in records] == ["batch100"]
    record = records[0]
    assert record["events_per_s"] > 0  # counted by the daemon itself
    assert record["requests_per_s"] > 0
    assert record["latency_p99_ms"] > 0
    assert record["daemon_exit"] == "clean"
    assert record["machine"]["nproc"] >= 1

"""End to end: the real ``twistd rta --print-config -c FILE`` prints the effective config in
our vocabulary and exits 0 without starting anything; its output, fed back with ``-c``, is
the same config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs
import pytest

from tests.config.test_go_vocabulary import UPSTREAM
from tests.config.test_printing import RICH
from tests.e2e.process import twistd_path
from twisted_rta.config import load_config
from twisted_rta.config.printing import REDACTED

pytestmark = pytest.mark.e2e
TIMEOUT = 60.0


def print_config(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [twistd_path(), "rta", "--print-config", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def yaml_lines(printed: str) -> list[str]:
    """The printed text without its comments (the header names the file it came from)."""
    return [line for line in printed.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("source", [RICH, UPSTREAM], ids=["ours", "go-service"])
def test_printed_config_fed_back_with_c_is_the_same_config(tmp_path: Path, source: str) -> None:
    given = tmp_path / "given.yaml"
    given.write_text(source)
    first = print_config(tmp_path, "-c", str(given))
    assert first.returncode == 0, first.stderr
    assert not list(tmp_path.glob("twistd.*")), "nothing is started, no pid or log file"
    printed = tmp_path / "printed.yaml"
    printed.write_text(first.stdout)

    expected = load_config(given)
    if expected.store.url is not None and "yourpassword" in expected.store.url:
        assert "yourpassword" not in first.stdout
        assert f"password is replaced by {REDACTED}: fill it in" in first.stdout
        url = expected.store.url.replace("yourpassword", REDACTED)
        expected = attrs.evolve(expected, store=attrs.evolve(expected.store, url=url))
    assert load_config(printed) == expected
    # Printed again from its own output: the same text, in our vocabulary.
    second = print_config(tmp_path, "-c", str(printed))
    assert second.returncode == 0, second.stderr
    assert yaml_lines(second.stdout) == yaml_lines(first.stdout)
    for go_only in ("storage:", "window:", "monitoring:"):
        assert go_only not in second.stdout


def test_a_bad_config_is_one_line_and_a_failed_exit(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("processing:\n  worker_count: 0\n")
    result = print_config(tmp_path, "-c", str(config))
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "twistd rta: config error: processing.worker_count: must be an integer between 1 "
        "and 256, got 0 (see: twistd rta --help)"
    )

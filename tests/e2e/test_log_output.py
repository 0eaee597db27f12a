"""End to end: ``logging.output`` as a file: the real daemon's lines go there (none to
stdout), the config's no-effect notices once each, a SIGHUP reopens it after logrotate moved
it, and a file in a missing directory is a one-line start error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.defer import succeed

from tests.e2e.process import DaemonProcess, clean_exit, poll

pytestmark = pytest.mark.e2e
TIMEOUT = 20.0


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def wait_for_record(path: Path, wanted: str) -> dict[str, Any]:
    """The first record of the log file whose message starts with ``wanted``."""

    def found() -> Any:
        return succeed(any(r["message"].startswith(wanted) for r in records(path)))

    await poll(found, timeout=TIMEOUT)
    return next(r for r in records(path) if r["message"].startswith(wanted))


@pytest_twisted.ensureDeferred
async def test_the_daemon_logs_to_its_file_and_reopens_it_on_sighup(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "rta.log"
    log_file.parent.mkdir()
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # server.mode: a Go key with no effect, to be logged once.
                "server": {"mode": "release"},
                "store": {"url": "memory:"},
                "logging": {"output": str(log_file), "access_log": False},
            }
        )
    )
    daemon = DaemonProcess.spawn(
        ["-c", str(config), "--listen", "tcp:0:interface=127.0.0.1"], tmp_path
    )
    try:
        await wait_for_record(log_file, "listening on")
        notices = [r for r in records(log_file) if r["message"].startswith("server.mode")]
        assert [(r["level"], r["message"]) for r in notices] == [("warn", notices[0]["message"])], (
            notices
        )
        assert "no effect" in notices[0]["message"]

        log_file.rename(tmp_path / "logs" / "rta.log.1")  # what logrotate does
        daemon.transport.signalProcess("HUP")
        await wait_for_record(log_file, "config reloaded")
        assert not any(
            r["message"].startswith("config reloaded")
            for r in records(tmp_path / "logs" / "rta.log.1")
        )
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    assert daemon.records == [], "no log line goes to stdout"
    # The stop's lines too, to the reopened file.
    assert any(r["message"].startswith("stopped listening on") for r in records(log_file))


@pytest_twisted.ensureDeferred
async def test_a_log_file_in_a_missing_directory_is_a_one_line_start_error(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing" / "rta.log"
    config = tmp_path / "rta.yaml"
    config.write_text(yaml.safe_dump({"logging": {"output": str(missing)}}))
    daemon = DaemonProcess.spawn(["-c", str(config), "--listen", "tcp:0"], tmp_path)
    reason = await daemon.ended.addTimeout(TIMEOUT, reactor)
    assert getattr(reason, "exitCode", None) == 1, daemon.output_text()
    assert "".join(daemon.other_output).strip() == (
        f"cannot start: logging.output: cannot open {str(missing)!r} for appending: "
        "No such file or directory"
    )

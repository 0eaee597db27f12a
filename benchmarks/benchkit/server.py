"""A server under test as a child process: start it, learn its port from its log, stop it."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# The daemon logs "listening on 127.0.0.1:PORT (tcp:0:...)"; the trivial server says the same.
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec (and survives taskset's exec): if the harness is killed
    # outright (SIGKILL, a test timeout), the server gets SIGTERM instead of living on.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerError(RuntimeError):
    """The server did not start or stop as expected; the message ends with its log."""


class ServerProcess:
    def __init__(
        self, argv: list[str], *, cwd: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("wb")
        # Output to a file, not a pipe: a full pipe nobody reads would stall the server.
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=_die_with_parent,
        )
        self.pid = self.process.pid
        self.port: int | None = None
        self.returncode: int | None = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def fail(self, message: str) -> ServerError:
        return ServerError(f"{message}\n--- last lines of {self.log_path} ---\n{self.log_tail()}")

    def wait_for_log(
        self, pattern: re.Pattern[str], timeout: float, after: int = 0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the log past offset ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.log_text(), after)
            if found:
                return found
            if self.process.poll() is not None:
                raise self.fail(f"exited with status {self.process.returncode} while starting")
            if time.monotonic() > deadline:
                raise self.fail(f"no log line matching {pattern.pattern!r} within {timeout:.0f}s")
            time.sleep(0.05)

    def wait_for_port(self, timeout: float = 30.0) -> int:
        self.port = int(self.wait_for_log(_LISTENING, timeout).group(1))
        return self.port

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None:
                raise self.fail(f"exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise self.fail(f"{what} not reached within {timeout:.0f}s")
            time.sleep(0.1)

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the exit (the daemon drains and writes every window first);
        SIGKILL past ``timeout``. Returns the exit status (negative: killed by that signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        self.returncode = self.process.returncode
        return self.returncode

"""Where the log lines go: ``logging.output`` (stdout, stderr or a file appended to and
reopened on SIGHUP), unless twistd's own ``--logfile`` says otherwise."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger

from twisted_rta import tap
from twisted_rta.ops import logs
from twisted_rta.ops.logs import STDERR, STDOUT, LogOutput


class FakeTwistd(dict[str, Any]):
    """twistd's ServerOptions, as far as tap reads it (it behaves like a dict)."""


def options_for(
    tmp_path: Path, output: str | None = None, *args: str, **twistd: Any
) -> tap.Options:
    """rta's options with ``logging.output: output`` in its config file, and ``twistd``
    its parent's options when given."""
    if output is not None:
        path = tmp_path / "rta.yaml"
        path.write_text(f"logging:\n  output: {output!r}\n")
        args = ("-c", str(path), *args)
    options = tap.Options()
    options.parseOptions(list(args))
    if twistd:
        options.parent = FakeTwistd({"nodaemon": False, "logfile": None, **twistd})
    return options


def test_stdout_and_stderr_write_to_the_process_streams(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in (STDOUT, STDERR):
        output = LogOutput.open(name)
        assert (output.target, output.is_file) == (name, False)
        output.write(f"to {name}\n")
        output.flush()
        output.reopen()  # nothing to reopen
        output.write("still\n")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("to stdout\nstill\n", "to stderr\nstill\n")


def test_a_file_is_created_then_appended_to_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    output = LogOutput.open("rta.log")
    assert output.target == str(tmp_path / "rta.log") and output.is_file
    output.write("first\n")
    output.close()
    # Relative to where it was opened, wherever the process goes next (twistd --rundir).
    monkeypatch.chdir("/")
    output = LogOutput.open(str(tmp_path / "rta.log"))
    output.write("second\n")  # line-buffered: on disk without a flush
    assert (tmp_path / "rta.log").read_text() == "first\nsecond\n"
    output.close()


def test_reopen_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "rta.log"
    output = LogOutput.open(str(path))
    output.write("before\n")
    path.rename(tmp_path / "rta.log.1")  # what logrotate does
    output.write("still to the moved file\n")
    output.reopen()
    output.write("after\n")
    output.close()
    assert (tmp_path / "rta.log.1").read_text() == "before\nstill to the moved file\n"
    assert path.read_text() == "after\n"


def test_a_failed_reopen_keeps_the_old_file_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(logs, "log", Logger(observer=events.append))
    directory = tmp_path / "logs"
    directory.mkdir()
    output = LogOutput.open(str(directory / "rta.log"))
    directory.rename(tmp_path / "moved")
    output.reopen()
    output.write("kept\n")
    output.close()
    assert (tmp_path / "moved" / "rta.log").read_text() == "kept\n"
    assert [event["log_level"].name for event in events] == ["error"]
    assert events[0]["path"] == str(directory / "rta.log")
    assert events[0]["reason"] == "No such file or directory"


def test_opening_a_file_in_a_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LogOutput.open(str(tmp_path / "missing" / "rta.log"))


@pytest.mark.parametrize(
    ("output", "twistd", "expected"),
    [
        # logging.output decides when twistd's --logfile is not given...
        ("stdout", {"nodaemon": True}, "stdout"),
        ("stderr", {"nodaemon": True}, "stderr"),
        ("/var/log/rta.log", {"nodaemon": True}, "/var/log/rta.log"),
        ("/var/log/rta.log", {}, "/var/log/rta.log"),
        # ...where a daemonised twistd has no stdout or stderr: its own default file.
        ("stdout", {}, "twistd.log"),
        ("stderr", {}, "twistd.log"),
        # twistd's --logfile wins, as --listen replaces server.listen ("-" is stdout).
        ("/var/log/rta.log", {"nodaemon": True, "logfile": "-"}, "stdout"),
        ("stderr", {"logfile": "/tmp/other.log"}, "/tmp/other.log"),
        ("stdout", {"nodaemon": True, "logfile": "/tmp/other.log"}, "/tmp/other.log"),
    ],
)
def test_twistds_logfile_wins_over_logging_output(
    tmp_path: Path, output: str, twistd: dict[str, Any], expected: str
) -> None:
    options = options_for(tmp_path, output, **{"nodaemon": False, **twistd})
    assert tap.log_destination(options) == expected


def test_without_twistd_logging_output_decides(tmp_path: Path) -> None:
    assert tap.log_destination(options_for(tmp_path)) == STDOUT
    assert tap.log_destination(options_for(tmp_path, "stderr")) == STDERR


def test_an_output_that_cannot_be_opened_is_a_one_line_start_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "rta.log"
    options = options_for(tmp_path, str(missing), nodaemon=True)
    with pytest.raises(SystemExit) as caught:
        tap._log_output(options)
    assert caught.value.code == (
        f"cannot start: logging.output: cannot open {str(missing)!r} for appending: "
        "No such file or directory"
    )
    options = options_for(tmp_path, "stdout", nodaemon=True, logfile=str(missing))
    with pytest.raises(SystemExit) as caught:
        tap._log_output(options)
    assert str(caught.value.code).startswith("cannot start: --logfile: cannot open ")


def test_sighup_reopens_the_log_file_before_the_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers: dict[int, Any] = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.__setitem__(signum, handler)
    )

    class ThreadCalls:
        def callFromThread(self, f: Any) -> None:
            f()

    path = tmp_path / "rta.log"
    output = LogOutput.open(str(path))
    order: list[str] = []

    def reload() -> None:
        order.append("reload")
        output.write("reloaded\n")

    tap._on_sighup(ThreadCalls(), output, reload)
    output.write("before\n")
    path.rename(tmp_path / "rta.log.1")
    handlers[signal.SIGHUP](signal.SIGHUP, None)
    output.close()
    assert order == ["reload"]
    assert (tmp_path / "rta.log.1").read_text() == "before\n"
    assert path.read_text() == "reloaded\n"  # the reload's lines go to the new file


def test_make_service_writes_the_daemons_lines_to_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.application.service import Application
    from twisted.logger import ILogObserver, LogLevel

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    path = tmp_path / "rta.log"
    options = options_for(tmp_path, str(path), "--listen", "tcp:0", nodaemon=True)
    application = Application("rta")
    tap.makeService(options).setServiceParent(application)
    observer = application.getComponent(ILogObserver)
    observer({"log_format": "to the file", "log_level": LogLevel.info, "log_namespace": "t"})
    assert path.read_text().endswith("[info] t: to the file\n")


def test_children_log_where_the_supervisor_does(tmp_path: Path) -> None:
    def logfile_of(options: tap.Options) -> list[str]:
        argv = tap.child_command(options, "n", [], executable="py")
        return argv[5:7] if argv[5] == "--logfile" else []

    # A file from logging.output: the children get it, absolute (they may run elsewhere).
    options = options_for(tmp_path, "rta.log", nodaemon=True)
    assert logfile_of(options) == ["--logfile", os.path.abspath("rta.log")]
    # The supervisor's --logfile=- beats a file in the config the children also read.
    options = options_for(tmp_path, "rta.log", nodaemon=True, logfile="-")
    assert logfile_of(options) == ["--logfile", "-"]
    # stdout or stderr from the config: the children's config says the same, they share it.
    assert logfile_of(options_for(tmp_path, "stderr", nodaemon=True)) == []
    assert logfile_of(options_for(tmp_path, "stdout", nodaemon=True)) == []
    # Daemonised: the supervisor's twistd.log.
    options = options_for(tmp_path, "stdout")
    options.parent = FakeTwistd(nodaemon=False, logfile=None)
    assert logfile_of(options) == ["--logfile", os.path.abspath("twistd.log")]

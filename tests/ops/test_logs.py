"""Log observers: one JSON object per line, readable console lines, level filtering."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher

from twisted_rta.ops.logs import make_observer
from twisted_rta.timefmt import iso_utc


def logger_writing_to(stream: io.StringIO, *, log_format: str, level: str) -> Logger:
    publisher = LogPublisher()
    publisher.addObserver(make_observer(stream, log_format=log_format, level=level))
    return Logger(namespace="twisted_rta.test", observer=publisher)


def test_json_is_one_compact_object_per_line_with_structured_fields() -> None:
    stream = io.StringIO()
    log = logger_writing_to(stream, log_format="json", level="info")
    log.info("window closed: {events} events", events=1002, start=60.0)
    log.warn("queue at {percent}%", percent=91)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "info"
    assert first["logger"] == "twisted_rta.test"
    assert first["message"] == "window closed: 1002 events"
    assert first["events"] == 1002
    assert first["start"] == 60.0
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert json.loads(lines[1])["level"] == "warn"
    assert " " not in lines[0].split('"message"')[0]  # compact separators


def test_json_failure_keeps_traceback_inside_the_single_line() -> None:
    stream = io.StringIO()
    log = logger_writing_to(stream, log_format="json", level="info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("tick failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "critical"
    assert record["message"] == "tick failed"
    assert "ValueError: boom" in record["traceback"]


def test_json_renders_unserialisable_fields_as_text() -> None:
    stream = io.StringIO()
    log = logger_writing_to(stream, log_format="json", level="info")
    log.info("odd", thing=object(), items=(1, "a"))
    record = json.loads(stream.getvalue())
    assert record["thing"].startswith("<object object")
    assert record["items"] == [1, "a"]


def test_console_line_shape() -> None:
    stream = io.StringIO()
    log = logger_writing_to(stream, log_format="console", level="info")
    log.info("listening on {address}", address="127.0.0.1:8080")
    line = stream.getvalue()
    assert line.endswith("\n")
    assert "[info] twisted_rta.test: listening on 127.0.0.1:8080" in line


def test_console_indents_traceback_lines() -> None:
    stream = io.StringIO()
    log = logger_writing_to(stream, log_format="console", level="info")
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        log.failure("it broke")
    lines = stream.getvalue().splitlines()
    assert "[critical] twisted_rta.test: it broke" in lines[0]
    assert all(line.startswith("\t") for line in lines[1:])
    assert any("RuntimeError: bad" in line for line in lines)


def test_level_filter_applies_to_both_formats() -> None:
    for log_format in ("json", "console"):
        stream = io.StringIO()
        log = logger_writing_to(stream, log_format=log_format, level="warn")
        log.debug("hidden debug")
        log.info("hidden info")
        log.warn("shown warning")
        log.error("shown error")
        text = stream.getvalue()
        assert "hidden" not in text
        assert text.count("shown") == 2


def test_debug_level_shows_debug() -> None:
    stream = io.StringIO()
    logger_writing_to(stream, log_format="console", level="debug").debug("fine detail")
    assert "[debug]" in stream.getvalue()


def test_iso_utc() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"


def test_observer_can_be_reconfigured_while_running() -> None:
    from twisted_rta.ops.logs import make_observer

    stream = io.StringIO()
    observer = make_observer(stream, log_format="console", level="info")
    publisher = LogPublisher()
    publisher.addObserver(observer)
    log = Logger(namespace="t", observer=publisher)
    log.debug("hidden")
    observer.configure(log_format="json", level="debug")
    log.debug("now shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "now shown"

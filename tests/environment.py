"""Skips for what the machine lacks, and RTA_REQUIRE_ENVIRONMENT=1 to make them failures.

A test that needs something of the machine (PostgreSQL on 127.0.0.1:5432, wrk, Chromium and
Playwright, systemd-analyze) skips through ``require`` (at run time) or ``requires`` (a
decorator, decided at collection), saying what is missing. On a developer's machine that is a
skip. Where the whole environment is promised (CI: `.ci/run` sets the switch) such a skip
would let a test pass unseen, so this plugin (loaded by tests/conftest.py) reports it as a
failure with the same reason. Other skips (a case that does not apply, such as a PostgreSQL-only
check in a test parametrised over stores) stay skips.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import NoReturn

import pytest

SWITCH = "RTA_REQUIRE_ENVIRONMENT"
# Starts the reason of every skip for a missing tool or service.
TAG = "environment: "


def environment_required() -> bool:
    return os.environ.get(SWITCH) == "1"


def missing(what: str) -> NoReturn:
    """Skip the running test: the machine lacks ``what`` (a failure under the switch)."""
    pytest.skip(TAG + what)


def require(available: bool, what: str) -> None:
    """Skip the running test unless ``available``; ``what`` says what is missing."""
    if not available:
        missing(what)


def requires(available: bool, what: str) -> pytest.MarkDecorator:
    """``require`` as a decorator, for a check that can be made at collection."""
    return pytest.mark.skipif(not available, reason=TAG + what)


def _fail_if_environment_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not environment_required():
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if TAG not in reason:
        return
    report.outcome = "failed"
    report.longrepr = f"{reason}\n({SWITCH}=1: this machine must provide it, so a skip fails)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_if_environment_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_if_environment_skip(report)
    return report

"""Strict mode: with ``IMAGEGATE_STRICT_TESTS=1`` (``.ci/run`` sets it) every skip is a failure.

The suite skips what it cannot run here (no PostgreSQL, Redis or Chromium on a developer's
machine); in CI a missing real component must fail the run, not pass it quietly.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

ENV = "IMAGEGATE_STRICT_TESTS"


def strict() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def _fail_skip(report: Any) -> None:
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, which {ENV}=1 makes a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    _fail_skip(outcome.get_result())

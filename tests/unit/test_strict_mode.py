"""Strict mode turns a skipped test (a real component missing) into a failed run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.strict import ENV

ROOT = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

pytest.importorskip("a_module_that_is_not_installed")


def test_never_runs():
    pass
"""
SKIPPED_AT_RUN = """
import pytest


def test_needs_a_server():
    pytest.skip("no PostgreSQL here")
"""


def run(tmp_path: Path, source: str, strict: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_example.py").write_text(source)
    env = {**os.environ, ENV: strict, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.strict", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )


def test_a_skip_passes_outside_strict_mode(tmp_path: Path) -> None:
    for source in (SKIPPING, SKIPPED_AT_RUN):
        result = run(tmp_path, source, "")
        assert result.returncode in (0, 5), result.stdout  # passed, or nothing left to run
        assert "1 skipped" in result.stdout


def test_a_skip_fails_in_strict_mode_and_says_why(tmp_path: Path) -> None:
    for source, reason in ((SKIPPING, "a_module_that_is_not_installed"), (SKIPPED_AT_RUN, "no PostgreSQL here")):
        result = run(tmp_path, source, "1")
        assert result.returncode in (1, 2), result.stdout  # failed tests, or a failed collection
        assert f"{ENV}=1 makes a failure" in result.stdout and reason in result.stdout

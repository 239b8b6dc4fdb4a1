"""The allocator and collector tuning ``imagegate serve`` applies at start."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from imagegate.api.app import create_app
from imagegate.memory import tune_malloc
from imagegate.settings import Settings


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_is_tuned_unless_the_operator_set_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert tune_malloc() is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert tune_malloc() is False


def test_tune_gc_freezes_what_is_alive_and_collects_young_objects_less_often() -> None:
    # In a process of its own: a frozen collector would outlive this test.
    script = (
        "import gc, json\n"
        "from imagegate.memory import GC_THRESHOLDS, tune_gc\n"
        "before = gc.get_freeze_count()\n"
        "tune_gc()\n"
        "frozen = gc.get_freeze_count()\n"
        "later = [[i] for i in range(1000)]\n"
        "print(json.dumps([before, frozen, gc.get_freeze_count(), gc.get_threshold(), GC_THRESHOLDS]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, frozen, after, thresholds, wanted = json.loads(done.stdout)
    assert before == 0 and frozen > 10_000  # the modules imported so far, at least
    assert after == frozen  # objects made afterwards are collected as usual
    assert thresholds == wanted and thresholds[0] > 700


async def test_on_started_runs_once_the_app_is_ready(tmp_path: Path) -> None:
    seen: list[bool] = []
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", bootstrap_key=False)
    app = create_app(settings, on_started=lambda: seen.append(hasattr(app.state, "gateway")))
    async with app.router.lifespan_context(app):
        assert seen == [True]
    assert seen == [True]

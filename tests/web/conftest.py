"""Browser fixtures: Debian's Chromium driven by Playwright, one browser per test module.

Every page records console errors and uncaught exceptions; a test fails on any it did not
declare expected (a failed fetch the test provokes, say).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import LiveServer

# Test modules skip themselves without playwright (pytest.importorskip); this file must import.
try:
    from playwright import sync_api
except ImportError:
    sync_api = None

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000

if sync_api is not None:
    sync_api.expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Console:
    """Console errors and page exceptions seen, less those a test declared expected."""

    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def record(self, text: str) -> None:
        self.errors.append(text)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"the web tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: sync_api.Browser, server: LiveServer, console: Console) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport=DESKTOP, base_url=server.base_url, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and console.record(f"console: {message.text}"))
    page.on("pageerror", lambda error: console.record(f"page error: {error}"))
    try:
        yield page
    finally:
        context.close()
    assert console.unexpected() == [], "errors in the browser console"


def screenshot(page: sync_api.Page, name: str) -> Path:
    """Saves a full-page screenshot under test-artifacts/web/ and returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or DESKTOP
    path = ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    return path


def no_horizontal_scroll(page: sync_api.Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

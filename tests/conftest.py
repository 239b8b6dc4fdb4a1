"""Shared fixtures: a real imagegate server on a random loopback port."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from imagegate.api.app import create_app
from imagegate.clock import Clock, fixed_clock
from imagegate.http_server import ConnectionLimits, ImagegateHttpProtocol, protocol_with
from imagegate.settings import Settings
from imagegate.store import Store, upgrade
from tests.postgres import postgres_admin_url  # noqa: F401 - a session fixture for every test module

pytest_plugins = ["tests.strict"]


#: The day the servers of the suite live on: every model of the shipped catalog is served then.
#: Tests about other days (sunsets) start a server with a clock of their own.
CATALOG_DAY = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@dataclass
class LiveServer:
    base_url: str
    key: str
    database_url: str
    settings: Settings
    #: The running application: its ``state`` holds the gateway, for tests that reach inside.
    app: FastAPI

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=60, **kwargs)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def create_key(self, name: str = "") -> str:
        return self.store_call(lambda s: s.create_key(name))[0]

    def store_call(self, action: Callable[[Store], Any]) -> Any:
        """``await action(store)`` on a store of this server's database, from a test's thread."""
        return asyncio.run(_with_store(self.database_url, action))


async def _with_store(url: str, action: Callable) -> Any:
    store = Store(url)
    try:
        return await action(store)
    finally:
        await store.close()


def start_server(
    tmp_path: Path, *, clock: Clock = fixed_clock(CATALOG_DAY), **overrides: Any
) -> tuple[LiveServer, Callable[[], None]]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'imagegate.db'}"
    settings = Settings(database_url=database_url, bootstrap_key=False,
                        **{"journal_dir": tmp_path / "journal", **overrides})
    upgrade(database_url)
    secret = asyncio.run(_with_store(database_url, lambda s: s.create_key("tests")))[0]
    app = create_app(settings, clock=clock)
    limits = ConnectionLimits(settings.header_timeout_s, settings.body_timeout_s, settings.max_connections or None)
    port, stop = serve_asgi(app, http=protocol_with(limits))
    return LiveServer(f"http://127.0.0.1:{port}", secret, database_url, settings, app), stop


def serve_asgi(app: Any, http: Any = ImagegateHttpProtocol) -> tuple[int, Callable[[], None]]:
    """``app`` served by uvicorn on a loopback port, in a thread; the port and how to stop it.
    By default with imagegate's protocol (``http_server.py``), as ``imagegate serve`` runs it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return server.servers[0].sockets[0].getsockname()[1], stop


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the session, default settings (a short keep-alive, to see it in tests)."""
    live, stop = start_server(tmp_path_factory.mktemp("server"), sse_keepalive_s=0.2)
    yield live
    stop()


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """A server with settings of the test's own; stopped after the test."""
    stops: list[Callable[[], None]] = []

    def make(**overrides: Any) -> LiveServer:
        live, stop = start_server(tmp_path_factory.mktemp("server"), **overrides)
        stops.append(stop)
        return live

    yield make
    for stop in stops:
        stop()


@pytest.fixture
def emulator() -> Iterator[Callable[..., Any]]:
    """Starts a provider emulator by module name (``emulator("openai")``); stopped after the test."""
    import importlib

    from tests.emulators.base import Emulator, EmulatorServer

    servers: list[EmulatorServer] = []

    def start(name: str, **options: Any) -> Emulator:
        server = EmulatorServer(Emulator(importlib.import_module(f"tests.emulators.{name}"), **options))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


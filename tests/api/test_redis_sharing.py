"""Two ``imagegate serve`` processes sharing one real Redis enforce one rate limit and share
endpoint health."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from imagegate.store import upgrade
from tests.api.test_crash_and_secrets import QUICK, Serve, store_call
from tests.redis_fixture import redis_url  # noqa: F401 - the session fixture

CATALOG = Path(__file__).with_name("routing_catalog.yaml")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis_url: str):  # noqa: F811
    """Two servers on one database and one Redis (a Redis database of this module's own), and
    a function making a new key's auth header."""
    folder = tmp_path_factory.mktemp("shared")
    database = f"sqlite+aiosqlite:///{folder / 'shared.db'}"
    upgrade(database)
    store_call(database, lambda s: s.add_credits(Decimal(10)))
    env = {"IMAGEGATE_REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/1", "IMAGEGATE_RATE_LIMIT_RPM": "5",
           "IMAGEGATE_CATALOG_PATHS": f'["{CATALOG}"]'}
    with ThreadPoolExecutor(2) as pool:  # their start-ups overlap
        servers = list(pool.map(lambda _: Serve(folder, database, **env), range(2)))

    def new_key() -> dict[str, str]:
        secret, _ = store_call(database, lambda s: s.create_key("shared"))
        return {"Authorization": f"Bearer {secret}"}

    yield servers[0], servers[1], new_key
    for server in servers:
        server.stop()


def test_two_processes_enforce_one_rate_limit_together(pair) -> None:
    one, other, new_key = pair
    auth = new_key()
    responses = [httpx.post(f"{server.api}/images", json=QUICK, headers=auth, timeout=30)
                 for server in (one, other) * 5]
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 5  # five in all, not five each
    for refused in responses[5:]:
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["code"] == 429


def test_an_endpoint_failing_on_one_process_opens_its_circuit_on_the_other(pair) -> None:
    one, other, new_key = pair
    body = {"model": "routing/always-failing-primary", "prompt": "x", "resolution": "512",
            "provider": {"order": ["cheap"]}}
    auth = new_key()  # five requests: within its rate limit
    for _ in range(5):  # the breaker opens after five consecutive failures
        response = httpx.post(f"{one.api}/images", json=body, headers=auth, timeout=30)
        assert tried(one, response, auth) == [("cheap", 502), ("dear", 200)]
    time.sleep(0.5)  # well past the staleness bound
    auth = new_key()
    response = httpx.post(f"{other.api}/images", json=body, headers=auth, timeout=30)
    assert tried(other, response, auth) == [("dear", 200)]  # its first request skips the open circuit


def tried(server: Serve, response: httpx.Response, auth: dict) -> list[tuple[str, int]]:
    """The endpoints a generation tried; its record is written just after the response."""
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    while True:
        record = httpx.get(f"{server.api}/generation", params={"id": response.headers["x-generation-id"]},
                           headers=auth)
        if record.status_code == 200 or time.monotonic() > deadline:
            return [(t["provider_slug"], t["status"]) for t in record.json()["data"]["provider_responses"]]
        time.sleep(0.05)

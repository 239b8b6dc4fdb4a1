"""Routing and resilience through a real server: preferences, fallbacks, health, load."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import LiveServer, start_server

CATALOG = Path(__file__).with_name("routing_catalog.yaml")


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory):
    live, stop = start_server(tmp_path_factory.mktemp("routing"), catalog_paths=[CATALOG])
    yield live
    stop()


def generate(server: LiveServer, model: str, **body):
    with server.client() as client:
        return client.post("/images", headers=server.auth(),
                           json={"model": model, "prompt": "x", "resolution": "512", **body})


def record(server: LiveServer, generation_id: str) -> dict:
    """The generation's record; it is written just after the response, so allow a moment."""
    deadline = time.monotonic() + 5
    with server.client() as client:
        while True:
            response = client.get("/generation", params={"id": generation_id}, headers=server.auth())
            if response.status_code == 200 or time.monotonic() > deadline:
                return response.json()["data"]
            time.sleep(0.02)


def test_upstream_failure_falls_back_and_every_attempt_is_on_record(routed: LiveServer) -> None:
    response = generate(routed, "routing/always-failing-primary", provider={"order": ["cheap"]})
    assert response.status_code == 200
    assert response.headers["x-provider-name"] == "Dear Working"
    tried = record(routed, response.headers["x-generation-id"])["provider_responses"]
    assert [(t["provider_slug"], t["status"]) for t in tried] == [("cheap", 502), ("dear", 200)]


def test_allow_fallbacks_false_returns_the_upstream_error(routed: LiveServer) -> None:
    response = generate(routed, "routing/always-failing-primary",
                        provider={"order": ["cheap"], "allow_fallbacks": False})
    assert response.status_code == 502


def test_only_and_ignore_are_honoured(routed: LiveServer) -> None:
    assert generate(routed, "routing/always-failing-primary", provider={"only": ["cheap"]}).status_code == 502
    ok = generate(routed, "routing/always-failing-primary", provider={"ignore": ["cheap"]})
    assert ok.status_code == 200 and ok.headers["x-provider-name"] == "Dear Working"
    none_left = generate(routed, "routing/always-failing-primary", provider={"only": ["nobody"]})
    assert none_left.status_code == 404


def test_content_refusal_does_not_fall_back(routed: LiveServer) -> None:
    response = generate(routed, "routing/refusing-primary", provider={"order": ["prude"]})
    assert response.status_code == 400
    assert response.json()["error"]["metadata"]["error_type"] == "content_policy_violation"


def test_content_refusal_falls_back_when_the_operator_opts_in(make_server) -> None:
    lenient = make_server(catalog_paths=[CATALOG], fallback_on_content_refusal=True)
    response = generate(lenient, "routing/refusing-primary", provider={"order": ["prude"]})
    assert response.status_code == 200 and response.headers["x-provider-name"] == "Lenient"


def test_sort_price_picks_the_cheapest_capable_endpoint(routed: LiveServer) -> None:
    for _ in range(3):
        response = generate(routed, "routing/priced", provider={"sort": "price"})
        assert response.headers["x-provider-name"] == "Low"
        assert response.json()["usage"]["cost"] == pytest.approx(0.01)


def test_order_is_honoured(routed: LiveServer) -> None:
    response = generate(routed, "routing/priced", provider={"order": ["high", "low"]})
    assert response.headers["x-provider-name"] == "High"


def test_operator_default_preferences_apply(make_server) -> None:
    server = make_server(catalog_paths=[CATALOG], provider_preferences={"ignore": ["low"], "sort": "price"})
    assert generate(server, "routing/priced").headers["x-provider-name"] == "Mid"
    assert generate(server, "routing/priced", provider={"order": ["high"]}).headers["x-provider-name"] == "High"


def test_tripped_circuit_stops_traffic_then_recovers(make_server) -> None:
    server = make_server(catalog_paths=[CATALOG])
    breaker = server  # same process: the breaker's state is observed through the record
    for _ in range(5):  # five consecutive failures open the breaker on "cheap"
        generate(breaker, "routing/always-failing-primary", provider={"order": ["cheap"]})
    response = generate(breaker, "routing/always-failing-primary", provider={"order": ["cheap"]})
    tried = record(breaker, response.headers["x-generation-id"])["provider_responses"]
    assert [t["provider_slug"] for t in tried] == ["dear"]  # no traffic to the open circuit


def test_under_load_every_request_succeeds_and_the_flaky_share_drops(routed: LiveServer) -> None:
    def one(_: int) -> tuple[int, list[str]]:
        response = generate(routed, "routing/flaky-and-steady")
        tried = record(routed, response.headers["x-generation-id"])["provider_responses"]
        return response.status_code, [t["provider_slug"] for t in tried]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(160)))
    assert all(status == 200 for status, _ in results)
    firsts = Counter(tried[0] for _, tried in results)
    assert firsts["flaky"] > 0  # it was tried, so its failures were seen
    # Same price: without health it would get half the traffic; it gets far less.
    late_share = Counter(tried[0] for _, tried in results[-80:])["flaky"] / 80
    assert late_share < 0.2, late_share

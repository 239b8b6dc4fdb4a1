"""Provider preferences → endpoint order."""

from __future__ import annotations

from decimal import Decimal

from imagegate.catalog import Endpoint, PricingLine
from imagegate.routing import route
from imagegate.wire import ProviderPreferences


def endpoint(slug: str, price: str) -> Endpoint:
    return Endpoint(
        model_id="a/b", provider="x", provider_name=slug.title(), provider_slug=slug, provider_tag=slug,
        upstream_model="b", supported_parameters={}, allowed_passthrough_parameters=(), supports_streaming=False,
        pricing=(PricingLine("output_image", "image", Decimal(price)),),
    )


ENDPOINTS = [endpoint("google-ai-studio", "0.05"), endpoint("google-vertex/global", "0.04"), endpoint("azure", "0.06")]


def slugs(prefs: dict | None) -> list[str]:
    return [e.provider_slug for e in route(ENDPOINTS, ProviderPreferences(**prefs) if prefs else None)]


def test_base_slug_matches_regional_endpoints() -> None:
    assert slugs({"only": ["google-vertex"]}) == ["google-vertex/global"]
    assert set(slugs({"ignore": ["google-vertex"]})) == {"google-ai-studio", "azure"}


def test_order_puts_named_endpoints_first_and_keeps_fallbacks() -> None:
    assert slugs({"order": ["azure"]})[0] == "azure"
    assert set(slugs({"order": ["azure"]})) == {"azure", "google-ai-studio", "google-vertex/global"}
    assert slugs({"order": ["azure", "google-ai-studio"]}) == ["azure", "google-ai-studio", "google-vertex/global"]


def test_allow_fallbacks_false_keeps_only_the_first() -> None:
    assert slugs({"order": ["azure"], "allow_fallbacks": False}) == ["azure"]


def test_sort_price_puts_cheapest_first() -> None:
    assert slugs({"sort": "price"}) == ["google-vertex/global", "google-ai-studio", "azure"]
    assert slugs({"sort": {"by": "price"}})[0] == "google-vertex/global"


def test_open_circuit_endpoint_gets_no_traffic_while_another_can_serve() -> None:
    from imagegate.health import BreakerPolicy, HealthBook
    from imagegate.routing import endpoint_key

    clock = [0.0]
    health = HealthBook(BreakerPolicy(failures_to_open=2, cooldown_s=10), clock=lambda: clock[0])
    for _ in range(2):
        health.record(endpoint_key(ENDPOINTS[0]), ok=False, latency_s=1, status=502)
    order = [e.provider_slug for e in route(ENDPOINTS, ProviderPreferences(order=["google-ai-studio"]), health=health)]
    assert "google-ai-studio" not in order
    clock[0] = 11  # cool-down over: half-open, traffic again
    order = [e.provider_slug for e in route(ENDPOINTS, ProviderPreferences(order=["google-ai-studio"]), health=health)]
    assert order[0] == "google-ai-studio"
    health.record(endpoint_key(ENDPOINTS[0]), ok=False, latency_s=1, status=502)  # the probe fails
    assert health.snapshot(endpoint_key(ENDPOINTS[0]))["state"] == "open"
    clock[0] = 11 + 19
    assert health.snapshot(endpoint_key(ENDPOINTS[0]))["state"] == "open"  # doubled cool-down
    clock[0] = 11 + 21
    health.record(endpoint_key(ENDPOINTS[0]), ok=True, latency_s=1)
    assert health.snapshot(endpoint_key(ENDPOINTS[0]))["state"] == "closed"


def test_all_circuits_open_still_tries_rather_than_refuses() -> None:
    from imagegate.health import BreakerPolicy, HealthBook
    from imagegate.routing import endpoint_key

    health = HealthBook(BreakerPolicy(failures_to_open=1))
    for e in ENDPOINTS:
        health.record(endpoint_key(e), ok=False, latency_s=1, status=502)
    assert len(route(ENDPOINTS, None, health=health)) == 3


def test_sort_latency_uses_measured_p50_and_puts_unmeasured_last() -> None:
    from imagegate.health import HealthBook
    from imagegate.routing import endpoint_key

    health = HealthBook()
    health.record(endpoint_key(ENDPOINTS[2]), ok=True, latency_s=2)
    health.record(endpoint_key(ENDPOINTS[1]), ok=True, latency_s=5)
    assert slugs_with(health, {"sort": "latency"}) == ["azure", "google-vertex/global", "google-ai-studio"]


def test_sort_throughput_uses_seconds_per_megapixel() -> None:
    from imagegate.health import HealthBook
    from imagegate.routing import endpoint_key

    health = HealthBook()
    health.record(endpoint_key(ENDPOINTS[0]), ok=True, latency_s=8, megapixels=4)  # 2 s/MP
    health.record(endpoint_key(ENDPOINTS[2]), ok=True, latency_s=3, megapixels=1)  # 3 s/MP
    assert slugs_with(health, {"sort": {"by": "throughput"}})[:2] == ["google-ai-studio", "azure"]


def test_load_balancing_prefers_cheaper_endpoints_but_uses_all() -> None:
    import random
    from collections import Counter

    rng = random.Random(1)
    firsts = Counter(route(ENDPOINTS, None, rng=rng)[0].provider_slug for _ in range(3000))
    assert set(firsts) == {"google-ai-studio", "google-vertex/global", "azure"}
    assert firsts["google-vertex/global"] > firsts["google-ai-studio"] > firsts["azure"]


def test_failing_endpoint_share_drops_under_load_balancing() -> None:
    import random

    from imagegate.health import HealthBook
    from imagegate.routing import endpoint_key

    same_price = [endpoint("a", "0.05"), endpoint("b", "0.05")]
    health = HealthBook()
    for i in range(20):
        health.record(endpoint_key(same_price[0]), ok=i % 2 == 0, latency_s=1, status=200 if i % 2 == 0 else 502)
        health.record(endpoint_key(same_price[1]), ok=True, latency_s=1)
    rng = random.Random(2)
    firsts = [route(same_price, None, health=health, rng=rng)[0].provider_slug for _ in range(2000)]
    assert firsts.count("a") < firsts.count("b") * 0.7


def test_operator_defaults_merge_with_request_preferences() -> None:
    from imagegate.routing import merge_preferences

    defaults = ProviderPreferences(ignore=["azure"], only=["google-vertex", "google-ai-studio"], sort="price")
    merged = merge_preferences(defaults, ProviderPreferences(only=["google-vertex"], ignore=["x"], order=["a"]))
    assert merged.only == ["google-vertex"]
    assert merged.ignore == ["azure", "x"]
    assert merged.order == ["a"] and merged.sort == "price"
    assert merge_preferences(defaults, None) is defaults
    assert merge_preferences(None, merged) is merged
    nothing = merge_preferences(ProviderPreferences(only=["azure"]), ProviderPreferences(only=["google-vertex"]))
    assert route(ENDPOINTS, nothing) == []


def slugs_with(health, prefs: dict) -> list[str]:
    return [e.provider_slug for e in route(ENDPOINTS, ProviderPreferences(**prefs), health=health)]

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


def test_no_preferences_keep_catalog_order() -> None:
    assert slugs(None) == ["google-ai-studio", "google-vertex/global", "azure"]


def test_base_slug_matches_regional_endpoints() -> None:
    assert slugs({"only": ["google-vertex"]}) == ["google-vertex/global"]
    assert slugs({"ignore": ["google-vertex"]}) == ["google-ai-studio", "azure"]


def test_order_puts_named_endpoints_first_and_keeps_fallbacks() -> None:
    assert slugs({"order": ["azure"]}) == ["azure", "google-ai-studio", "google-vertex/global"]


def test_allow_fallbacks_false_keeps_only_the_first() -> None:
    assert slugs({"order": ["azure"], "allow_fallbacks": False}) == ["azure"]


def test_sort_price_puts_cheapest_first() -> None:
    assert slugs({"sort": "price"}) == ["google-vertex/global", "google-ai-studio", "azure"]
    assert slugs({"sort": {"by": "price"}})[0] == "google-vertex/global"

"""The shipped catalog loads; unions, sunsets and malformed files behave."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from imagegate.catalog import CatalogError, ServedCatalog, load_catalog, parse_catalog_document

TWO_ENDPOINTS = """
models:
  - id: acme/painter
    name: "Acme: Painter"
    endpoints:
      - provider: a
        provider_name: A
        supported_parameters:
          aspect_ratio: {type: enum, values: ["1:1", "16:9"]}
          n: {type: range, min: 1, max: 1}
        pricing: [{billable: output_image, unit: image, cost_usd: 0.00003}]
      - provider: b
        provider_name: B
        sunset: 2026-01-01
        supported_parameters:
          aspect_ratio: {type: enum, values: ["1:1", "21:9"]}
          n: {type: range, min: 1, max: 4}
          seed: {type: boolean}
        pricing: [{billable: output_image, unit: image, cost_usd: 0.04}]
"""


def test_shipped_catalog_has_the_sandbox_models() -> None:
    catalog = load_catalog()
    assert {"imagegate/sandbox", "imagegate/sandbox-tokens", "imagegate/sandbox-tiers",
            "imagegate/sandbox-vector"} <= {m.id for m in catalog.models()}


def test_model_level_parameters_are_the_union_of_endpoints() -> None:
    [model] = parse_catalog_document(yaml.safe_load(TWO_ENDPOINTS))
    union = model.supported_parameters
    assert union["aspect_ratio"].values == ("1:1", "16:9", "21:9")
    assert (union["n"].min, union["n"].max) == (1, 4)
    assert union["seed"].type == "boolean"


def test_prices_are_exact_decimals_not_binary_floats() -> None:
    [model] = parse_catalog_document(yaml.safe_load(TWO_ENDPOINTS))
    assert model.endpoints[0].pricing[0].cost_usd == Decimal("0.00003")


def test_sunset_and_unconfigured_endpoints_disappear(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(TWO_ENDPOINTS)
    catalog = load_catalog([path])
    model = catalog.restricted({"a", "b"}, today=dt.date(2026, 6, 1)).get("acme/painter")
    assert [e.provider_slug for e in model.endpoints] == ["a"]
    assert catalog.restricted({"b"}, today=dt.date(2025, 6, 1)).get("acme/painter").endpoints[0].provider == "b"
    assert catalog.restricted({"c"}, today=dt.date(2025, 6, 1)).get("acme/painter") is None


def test_the_served_catalog_follows_its_clock_across_a_sunset(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(TWO_ENDPOINTS)
    now = [dt.datetime(2025, 12, 31, 23, 59, tzinfo=dt.UTC)]
    served = ServedCatalog(load_catalog([path]), {"b"}, clock=lambda: now[0])
    assert served.get("acme/painter").endpoints[0].provider_slug == "b"
    assert served.retired_since("acme/painter") is None
    now[0] = dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)  # b's sunset: not served from that day on
    assert served.get("acme/painter") is None
    assert served.retired_since("acme/painter") is None  # endpoint a has no sunset: not retired


def test_a_model_whose_every_endpoint_is_past_sunset_is_retired_since_the_last(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(TWO_ENDPOINTS.replace("provider_name: A\n", "provider_name: A\n        sunset: 2026-03-01\n"))
    catalog = load_catalog([path])
    assert catalog.retired_since("acme/painter", dt.date(2026, 2, 28)) is None
    assert catalog.retired_since("acme/painter", dt.date(2026, 3, 1)) == dt.date(2026, 3, 1)
    assert catalog.retired_since("acme/nothing", dt.date(2026, 3, 1)) is None


@pytest.mark.parametrize(
    "broken",
    [
        "models: [{id: nope, name: x, endpoints: [{provider: a, provider_name: A}]}]",
        "models: [{id: a/b, name: x, endpoints: []}]",
        "models: [{id: a/b, name: x, endpoints: [{provider: a, provider_name: A, "
        "supported_parameters: {n: {type: range, min: 4, max: 1}}}]}]",
        "models: [{id: a/b, name: x, endpoints: [{provider: a, provider_name: A, "
        "pricing: [{billable: output_image, unit: pixel, cost_usd: 1}]}]}]",
        "models: [{id: a/b, name: x, endpoints: [{provider: a, provider_name: A, size_rules: {mode: table}}]}]",
        "models: [{id: a/b, name: x, endpoints: [{provider: a, provider_name: A, "
        "pricing: [{billable: output_image, unit: image, cost_usd: -0.01}]}]}]",
        "models: [{id: a/b, name: x, endpoints: [{provider: a, provider_name: A, "
        "pricing: [{billable: output_image, unit: image}]}]}]",
    ],
)
def test_malformed_catalog_is_refused_at_load(broken: str) -> None:
    with pytest.raises(CatalogError):
        parse_catalog_document(yaml.safe_load(broken))


def pricing_line(line: str) -> str:
    return f"models: [{{id: a/b, name: x, endpoints: [{{provider: a, provider_name: A, pricing: [{line}]}}]}}]"


def test_a_megapixel_line_may_price_each_images_first_megapixel_and_size_its_megapixel() -> None:
    doc = pricing_line("{billable: output_image, unit: megapixel, first_unit_usd: 0.03, cost_usd: 0.015, "
                       "pixels_per_megapixel: 1000000}")
    [model] = parse_catalog_document(yaml.safe_load(doc))
    [line] = model.endpoints[0].pricing
    assert (line.first_unit_usd, line.cost_usd) == (Decimal("0.03"), Decimal("0.015"))
    assert line.megapixel_size == 1_000_000
    assert line.to_wire() == {"billable": "output_image", "unit": "megapixel", "cost_usd": 0.015,
                              "first_unit_usd": 0.03, "pixels_per_megapixel": 1000000}


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("{billable: output_image, unit: image, cost_usd: 0.01, first_unit_usd: 0.02}", "need unit megapixel"),
        ("{billable: output_image, unit: token, cost_usd: 0.01, pixels_per_megapixel: 1000000}", "need unit megapixel"),
        ("{billable: input_text, unit: megapixel, cost_usd: 0.01, first_unit_usd: 0.02}", "has none"),
        ("{billable: output_image, unit: megapixel, cost_usd: 0.01, pixels_per_megapixel: 0}", "positive"),
        ("{billable: output_image, unit: megapixel, cost_usd: 0.01, pixels_per_megapixel: 1.5}", "positive"),
        ("{billable: output_image, unit: megapixel, cost_usd: 0.01, first_unit_usd: cheap}", "first_unit_usd"),
    ],
)
def test_a_tiered_or_resized_line_that_cannot_be_priced_is_refused_naming_the_field(line: str, named: str) -> None:
    with pytest.raises(CatalogError, match=named):
        parse_catalog_document(yaml.safe_load(pricing_line(line)))

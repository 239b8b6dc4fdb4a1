"""Known usage → the exact USD each provider's price sheet gives, through the shipped catalog."""

from __future__ import annotations

from decimal import Decimal

import pytest

from imagegate.billing import compute_cost
from imagegate.catalog import load_catalog
from imagegate.providers.base import Usage

CATALOG = load_catalog()


def cost(model: str, slug: str, usage: Usage, tier: str | None = None) -> Decimal:
    endpoint = next(e for e in CATALOG.get(model).endpoints if e.provider_slug == slug)
    return compute_cost(endpoint.pricing, usage, tier).total


@pytest.mark.parametrize(
    ("model", "slug", "usage", "usd"),
    [
        # OpenRouter's recorded gpt-image-1-mini low-quality image: 372 output tokens.
        ("openai/gpt-image-1-mini", "openai", Usage(output_image_tokens=372), "0.002976"),
        ("openai/gpt-image-1-mini", "azure", Usage(output_image_tokens=372), "0.002976"),
        # gpt-image-2: $30/M output image tokens, $5/M text, $8/M input image tokens.
        ("openai/gpt-image-2", "openai",
         Usage(output_image_tokens=4160, input_text_tokens=20, input_image_tokens=1000), "0.1329"),
        # Gemini 3.1 Flash Image at 1K: 1120 image tokens at $60/M.
        ("google/gemini-3.1-flash-image", "google-ai-studio", Usage(output_image_tokens=1120), "0.0672"),
        ("google/gemini-3.1-flash-image", "google-vertex/global", Usage(output_image_tokens=1120), "0.0672"),
        # Gemini 3 Pro Image: 1120 tokens at 1K/2K ($0.1344), 2000 at 4K ($0.24), inputs $2/M.
        ("google/gemini-3-pro-image", "google-vertex/global", Usage(output_image_tokens=1120), "0.1344"),
        ("google/gemini-3-pro-image", "google-ai-studio",
         Usage(output_image_tokens=2000, input_image_tokens=560), "0.24112"),
        # Flash-lite: 1120 tokens at $30/M = $0.0336.
        ("google/gemini-3.1-flash-lite-image", "google-vertex/global", Usage(output_image_tokens=1120), "0.0336"),
        # FLUX.2: per megapixel of output (1024² is exactly one), flex also per input MP.
        ("black-forest-labs/flux.2-pro", "black-forest-labs", Usage(output_pixels=1024 * 1024), "0.03"),
        ("black-forest-labs/flux.2-klein-4b", "black-forest-labs", Usage(output_pixels=1024 * 1024), "0.014"),
        ("black-forest-labs/flux.2-flex", "black-forest-labs",
         Usage(output_pixels=2048 * 1024, input_pixels=1024 * 1024), "0.18"),
        ("black-forest-labs/flux-kontext-pro", "black-forest-labs", Usage(output_images=1), "0.04"),
        # Stability: credits per image, 1 credit = $0.01 (Ultra 8, Core 3).
        ("stability-ai/stable-image-ultra", "stability", Usage(output_images=1), "0.08"),
        ("stability-ai/stable-image-core", "stability", Usage(output_images=4, requests=4), "0.12"),
    ],
)
def test_known_usage_costs_what_the_price_sheet_says(model: str, slug: str, usage: Usage, usd: str) -> None:
    assert cost(model, slug, usage) == Decimal(usd)

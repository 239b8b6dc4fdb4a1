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
        ("black-forest-labs/flux-kontext-pro", "black-forest-labs", Usage(output_images=1), "0.04"),
        # Stability: credits per image, 1 credit = $0.01 (Ultra 8, Core 3).
        ("stability-ai/stable-image-ultra", "stability", Usage(output_images=1), "0.08"),
        ("stability-ai/stable-image-core", "stability", Usage(output_images=4, requests=4), "0.12"),
    ],
)
def test_known_usage_costs_what_the_price_sheet_says(model: str, slug: str, usage: Usage, usd: str) -> None:
    assert cost(model, slug, usage) == Decimal(usd)


# FLUX.2 as BFL prices it; a megapixel is 1,000,000 pixels ("1024x1024 | 1.05 MP").
# [skill] https://github.com/black-forest-labs/skills/blob/main/skills/bfl-api/SKILL.md: the
#   "1MP T2I" / "1MP I2I" columns (one 1 MP image; the same with one 1 MP reference), and the
#   formula `(firstMP + (outputMP-1) * mpPrice) + (inputMP * mpPrice)` cents with its "1st MP"
#   and "+MP" columns, worked by hand below for sizes BFL quotes no price for.
# [pricing] https://docs.bfl.ai/quick_start/pricing: "a 2MP image with Klein 4B costs
#   $0.014 + $0.001 = $0.015"; FLUX.2 prices are "from" the 1 MP price.
MP = 1_000_000


def flux(width: int, height: int, *references: tuple[int, int]) -> Usage:
    """One FLUX.2 task: one image of ``width``×``height`` from these references."""
    return Usage(output_images=1, output_pixels=width * height, input_images=len(references),
                 input_pixels=sum(w * h for w, h in references))


@pytest.mark.parametrize(
    ("model", "usage", "usd"),
    [
        # [skill] 1MP T2I and 1MP I2I, each model.
        ("flux.2-pro", flux(1000, 1000), "0.03"),
        ("flux.2-pro", flux(1000, 1000, (1000, 1000)), "0.045"),
        ("flux.2-max", flux(1000, 1000), "0.07"),
        ("flux.2-max", flux(1000, 1000, (1000, 1000)), "0.10"),
        ("flux.2-flex", flux(1000, 1000), "0.05"),
        ("flux.2-flex", flux(1000, 1000, (1000, 1000)), "0.10"),
        ("flux.2-klein-4b", flux(1000, 1000), "0.014"),
        ("flux.2-klein-4b", flux(1000, 1000, (1000, 1000)), "0.015"),
        # [pricing] a 2 MP klein 4B image: $0.014 + $0.001.
        ("flux.2-klein-4b", flux(2000, 1000), "0.015"),
        # [pricing] "from $0.03": a smaller image still pays the whole first megapixel.
        ("flux.2-pro", flux(512, 512), "0.03"),
        # [skill] formula. pro 1024x1024 = 1.048576 MP: 3 + 0.048576 × 1.5 = 3.072864 credits.
        ("flux.2-pro", flux(1024, 1024), "0.03072864"),
        # pro 2048x2048 = 4.194304 MP: 3 + 3.194304 × 1.5 = 7.791456 credits.
        ("flux.2-pro", flux(2048, 2048), "0.07791456"),
        # pro 1024x1024 with eight 1024x1024 references: 3.072864 + 8 × 1.048576 × 1.5
        # = 3.072864 + 12.582912 = 15.655776 credits.
        ("flux.2-pro", flux(1024, 1024, *[(1024, 1024)] * 8), "0.15655776"),
        # klein 4B 2048x2048: 1.4 + 3.194304 × 0.1 = 1.7194304 credits.
        ("flux.2-klein-4b", flux(2048, 2048), "0.017194304"),
        # flex 1024x1024 with one 1024x1024 reference: 5 + 0.048576 × 5 + 1.048576 × 5 = 10.48576.
        ("flux.2-flex", flux(1024, 1024, (1024, 1024)), "0.1048576"),
        # max 2048x1024 with two 1024x1024 references: 7 + 1.097152 × 3 + 2.097152 × 3 = 16.582912.
        ("flux.2-max", flux(2048, 1024, (1024, 1024), (1024, 1024)), "0.16582912"),
    ],
)
def test_flux2_costs_what_bfl_charges(model: str, usage: Usage, usd: str) -> None:
    assert cost(f"black-forest-labs/{model}", "black-forest-labs", usage) == Decimal(usd)

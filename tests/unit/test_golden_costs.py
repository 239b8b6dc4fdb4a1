"""Known usage → the exact USD each provider's price sheet gives, through the shipped catalog."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

from imagegate.billing import compute_cost, output_image_tokens
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
        # gpt-image-2, OpenAI's rates per 1M tokens: text in $5, image in $8, image out $30,
        # text out $10 (developers.openai.com/api/docs/models/gpt-image-2).
        ("openai/gpt-image-2", "openai", Usage(input_text_tokens=10**6), "5"),
        ("openai/gpt-image-2", "openai", Usage(input_image_tokens=10**6), "8"),
        ("openai/gpt-image-2", "azure", Usage(output_image_tokens=10**6), "30"),
        ("openai/gpt-image-2", "openai", Usage(output_text_tokens=10**6), "10"),
        # Gemini, every token of a call (rates per 1M tokens: Flash $0.50 in / $3 text out / $60
        # image out, Pro $2 / $12 / $120, Flash Lite $0.25 / $1.50 / $30; google.yaml cites them).
        # Flash: 18 text + 1120 reference tokens × $0.50 = 0.000009 + 0.00056, a 1K image 1120 ×
        # $60 = 0.0672, 235 thinking tokens × $3 = 0.000705: 0.068474.
        ("google/gemini-3.1-flash-image", "google-ai-studio",
         Usage(input_text_tokens=18, input_image_tokens=1120, output_image_tokens=1120, output_text_tokens=235),
         "0.068474"),
        ("google/gemini-3.1-flash-image", "google-vertex/global",
         Usage(input_text_tokens=18, input_image_tokens=1120, output_image_tokens=1120, output_text_tokens=235),
         "0.068474"),
        # Pro at 1K: 20 text + 560 reference tokens × $2 = 0.00004 + 0.00112, 1120 × $120 = 0.1344,
        # 400 thinking tokens × $12 = 0.0048: 0.14036.
        ("google/gemini-3-pro-image", "google-vertex/global",
         Usage(input_text_tokens=20, input_image_tokens=560, output_image_tokens=1120, output_text_tokens=400),
         "0.14036"),
        # Pro at 4K: 10 × $2 = 0.00002, 560 × $2 = 0.00112, 2000 × $120 = 0.24, 1000 × $12 = 0.012: 0.25314.
        ("google/gemini-3-pro-image", "google-ai-studio",
         Usage(input_text_tokens=10, input_image_tokens=560, output_image_tokens=2000, output_text_tokens=1000),
         "0.25314"),
        # Flash Lite: 18 × $0.25 = 0.0000045, 1120 × $30 = 0.0336, 283 thinking × $1.50 = 0.0004245:
        # 0.034029; with one reference (1120 × $0.25 = 0.00028) 0.034309.
        ("google/gemini-3.1-flash-lite-image", "google-vertex/global",
         Usage(input_text_tokens=18, output_image_tokens=1120, output_text_tokens=283), "0.034029"),
        ("google/gemini-3.1-flash-lite-image", "google-ai-studio",
         Usage(input_text_tokens=18, input_image_tokens=1120, output_image_tokens=1120, output_text_tokens=283),
         "0.034309"),
        ("black-forest-labs/flux-kontext-pro", "black-forest-labs", Usage(output_images=1), "0.04"),
        # Stability: credits per image, 1 credit = $0.01 (Ultra 8, Core 3).
        ("stability-ai/stable-image-ultra", "stability", Usage(output_images=1), "0.08"),
        ("stability-ai/stable-image-core", "stability", Usage(output_images=4, requests=4), "0.12"),
    ],
)
def test_known_usage_costs_what_the_price_sheet_says(model: str, slug: str, usage: Usage, usd: str) -> None:
    assert cost(model, slug, usage) == Decimal(usd)


GPT_IMAGE_2_TOKENS = next(
    e for e in CATALOG.get("openai/gpt-image-2").endpoints if e.provider_slug == "openai"
).settings["output_image_tokens"]


@pytest.mark.parametrize(
    ("width", "height", "quality", "tokens"),
    [
        # OpenAI's cost calculator (image generation guide, "Calculating costs"), high quality,
        # as quoted in community.openai.com/t/livestream-starting-now-chatgpt-images-2-0/1379464?page=2.
        (1024, 1024, "high", 7024),
        (1536, 1024, "high", 5488),
        (1792, 1024, "high", 5063),
        (3584, 2048, "high", 12329),
        # Low quality, as listed in
        # community.openai.com/t/the-half-penny-gpt-image-2-challenge-api-only-gallery/1381388.
        (960, 720, "low", 130),
        (976, 704, "low", 129),
    ],
)
def test_gpt_image_2_output_tokens_are_what_openais_calculator_counts(
    width: int, height: int, quality: str, tokens: int
) -> None:
    assert output_image_tokens(GPT_IMAGE_2_TOKENS, width, height, quality) == tokens


@pytest.mark.parametrize(
    ("width", "height", "quality", "usd"),
    [
        # OpenAI's per-image prices for gpt-image-2, to the tenth of a cent (pricing page,
        # developers.openai.com/api/docs/pricing#image-generation; providers.md §1 "Pricing").
        (1024, 1024, "low", "0.006"),
        (1024, 1024, "medium", "0.053"),
        (1024, 1024, "high", "0.211"),
        (1536, 1024, "low", "0.005"),
        (1536, 1024, "medium", "0.041"),
        (1536, 1024, "high", "0.165"),
    ],
)
def test_gpt_image_2_images_cost_openais_published_per_image_prices(
    width: int, height: int, quality: str, usd: str
) -> None:
    tokens = output_image_tokens(GPT_IMAGE_2_TOKENS, width, height, quality)
    for slug in ("openai", "azure"):
        price = cost("openai/gpt-image-2", slug, Usage(output_image_tokens=tokens))
        assert price.quantize(Decimal("0.001"), ROUND_HALF_UP) == Decimal(usd)


@pytest.mark.parametrize("slug", ["google-ai-studio", "google-vertex/global"])
@pytest.mark.parametrize(
    ("model", "usage", "published"),
    [
        # https://ai.google.dev/gemini-api/docs/pricing, Gemini 3.1 Flash Image: "Output images at
        # 0.5K (512px) consume 747 tokens and are equivalent to $0.045 per image", 1K 1120 tokens
        # $0.067, 2K 1680 tokens $0.101, 4K 2520 tokens $0.151.
        ("google/gemini-3.1-flash-image", Usage(output_image_tokens=747), "0.045"),
        ("google/gemini-3.1-flash-image", Usage(output_image_tokens=1120), "0.067"),
        ("google/gemini-3.1-flash-image", Usage(output_image_tokens=1680), "0.101"),
        ("google/gemini-3.1-flash-image", Usage(output_image_tokens=2520), "0.151"),
        # Gemini 3 Pro Image: 1K and 2K images "consume 1120 tokens and are equivalent to $0.134
        # per image", 4K "2000 tokens ... $0.24"; "Image input is set at 560 tokens or $0.0011".
        ("google/gemini-3-pro-image", Usage(output_image_tokens=1120), "0.134"),
        ("google/gemini-3-pro-image", Usage(output_image_tokens=2000), "0.24"),
        ("google/gemini-3-pro-image", Usage(input_image_tokens=560), "0.0011"),
        # Gemini 3.1 Flash Lite Image: "$0.0336 per 1K resolution image" (1120 tokens, model card).
        ("google/gemini-3.1-flash-lite-image", Usage(output_image_tokens=1120), "0.0336"),
    ],
)
def test_gemini_prices_match_googles_published_per_image_examples(
    model: str, slug: str, usage: Usage, published: str
) -> None:
    # Google rounds its examples to the digits it prints.
    exponent = Decimal(published).as_tuple().exponent
    assert cost(model, slug, usage).quantize(Decimal(1).scaleb(exponent)) == Decimal(published)


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

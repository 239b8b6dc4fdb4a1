"""Pricing lines × usage → exact cost."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from imagegate.billing import applicable_lines, compute_cost, usage_to_wire, worst_case_usage
from imagegate.catalog import PricingLine
from imagegate.providers.base import Usage
from imagegate.sizing import FixedSize, SizeRules


def line(billable: str, unit: str, cost: str, variant: str | None = None) -> PricingLine:
    return PricingLine(billable, unit, Decimal(cost), variant)


def tiered(billable: str, first: str | None, further: str, pixels: int | None = 1_000_000) -> PricingLine:
    """A megapixel line whose first megapixel of each image costs ``first``, each further one ``further``."""
    first_usd = None if first is None else Decimal(first)
    return PricingLine(billable, "megapixel", Decimal(further),
                       first_unit_usd=first_usd, pixels_per_megapixel=pixels)


def test_token_priced_cost_matches_openrouter_recorded_example() -> None:
    # gpt-image-1-mini, low quality: 372 output tokens at $8e-6 and 15 prompt tokens at $2e-6.
    pricing = [line("output_image", "token", "0.000008"), line("input_text", "token", "0.000002")]
    cost = compute_cost(pricing, Usage(output_image_tokens=372, input_text_tokens=15))
    assert cost.completion == Decimal("0.002976")
    assert cost.prompt == Decimal("0.00003")
    assert cost.total == Decimal("0.003006")


def test_a_1024_square_is_exactly_one_megapixel_unless_the_line_sizes_its_megapixel() -> None:
    pricing = [line("output_image", "megapixel", "0.014")]
    assert compute_cost(pricing, Usage(output_pixels=1024 * 1024)).total == Decimal("0.014")
    decimal_megapixel = [tiered("output_image", None, "0.014")]
    assert compute_cost(decimal_megapixel, Usage(output_pixels=1000 * 1000)).total == Decimal("0.014")
    assert compute_cost(decimal_megapixel, Usage(output_pixels=1024 * 1024)).total == Decimal("0.014680064")


def test_the_first_megapixel_of_each_image_has_its_own_price_even_for_a_smaller_image() -> None:
    pricing = [tiered("output_image", "0.03", "0.015"), tiered("input_image", None, "0.015")]
    one = Usage(output_images=1, output_pixels=2_500_000)
    assert compute_cost(pricing, one).total == Decimal("0.03") + Decimal("1.5") * Decimal("0.015")
    small = Usage(output_images=1, output_pixels=250_000)
    assert compute_cost(pricing, small).total == Decimal("0.03")
    three_small = Usage(output_images=3, output_pixels=3 * 250_000)
    assert compute_cost(pricing, three_small).total == Decimal("0.09")
    edit = Usage(output_images=1, output_pixels=1_000_000, input_images=2, input_pixels=1_500_000)
    cost = compute_cost(pricing, edit)
    assert (cost.completion, cost.prompt) == (Decimal("0.03"), Decimal("0.0225"))  # references bill as input


@given(
    images=st.integers(1, 8), width=st.integers(1, 2048), height=st.integers(1, 2048),
    first=st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4),
    further=st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4),
)
def test_a_tiered_line_on_several_equal_images_costs_the_sum_of_each_image(
    images: int, width: int, height: int, first: Decimal, further: Decimal
) -> None:
    pricing = [tiered("output_image", str(first), str(further))]
    each = compute_cost(pricing, Usage(output_images=1, output_pixels=width * height)).total
    together = compute_cost(pricing, Usage(output_images=images, output_pixels=images * width * height)).total
    assert together == images * each
    assert each == first + further * max(Decimal(0), Decimal(width * height) / 1_000_000 - 1)


def test_per_image_and_reference_lines_add_up() -> None:
    pricing = [line("output_image", "image", "0.01"), line("input_reference", "image", "0.002")]
    assert compute_cost(pricing, Usage(output_images=3, input_images=2)).total == Decimal("0.034")


def test_request_unit_bills_once_per_generation() -> None:
    pricing = [line("output_image", "request", "0.001"), line("output_image", "image", "0.01")]
    assert compute_cost(pricing, Usage(output_images=1, requests=1)).total == Decimal("0.011")


def test_variant_line_matching_the_applied_tier_is_chosen() -> None:
    pricing = [line("output_image", "image", "0.04", "1k"), line("output_image", "image", "0.075", "2k"),
               line("input_image", "image", "0.003")]
    assert [l.cost_usd for l in applicable_lines(pricing, "2K")] == [Decimal("0.075"), Decimal("0.003")]
    assert compute_cost(pricing, Usage(output_images=1), "1K").total == Decimal("0.04")
    assert compute_cost(pricing, Usage(output_images=1), "4K").total == Decimal("0.04")  # base price


@given(
    tokens=st.integers(0, 10**7), images=st.integers(0, 10),
    price=st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=9),
)
def test_cost_is_exact_and_linear(tokens: int, images: int, price: Decimal) -> None:
    pricing = [line("output_image", "token", str(price)), line("output_image", "image", str(price))]
    cost = compute_cost(pricing, Usage(output_image_tokens=tokens, output_images=images))
    assert cost.total == price * tokens + price * images
    assert cost.prompt == 0


def test_usage_wire_has_openrouter_fields_and_unbilled_costs_zero() -> None:
    pricing = [line("output_image", "token", "0.00004"), line("input_text", "token", "0.000005")]
    usage = Usage(output_image_tokens=1000, input_text_tokens=10)
    wire = usage_to_wire(usage, compute_cost(pricing, usage))
    assert wire["prompt_tokens"] == 10 and wire["completion_tokens"] == 1000 and wire["total_tokens"] == 1010
    assert wire["cost"] == 0.04005
    assert wire["completion_tokens_details"]["image_tokens"] == 1000
    assert usage_to_wire(usage, compute_cost(pricing, usage), billed=False)["cost"] == 0


def test_worst_case_covers_the_largest_size_every_image_and_every_call() -> None:
    table = SizeRules(mode="table", table=(FixedSize(1024, 1024), FixedSize(1536, 1024)))
    usage = worst_case_usage(n=3, per_call=1, rules=table, prompt="a cat", reference_pixels=[512 * 512])
    assert usage.output_images == 3 and usage.requests == 3
    assert usage.output_pixels == 1536 * 1024 * 3 and usage.input_pixels == 3 * 512 * 512
    assert usage.output_image_tokens == 3 * 1536
    assert usage.input_images == 3 and usage.input_image_tokens == 3 * 256
    assert usage.input_text_tokens == 3 * 5


@given(n=st.integers(1, 10), width=st.integers(64, 4096), height=st.integers(64, 4096))
def test_worst_case_cost_is_never_below_the_actual_cost(n: int, width: int, height: int) -> None:
    rules = SizeRules(mode="free", max_edge=4096)
    pricing = [line("output_image", "megapixel", "0.03"), line("output_image", "token", "0.00004"),
               line("input_text", "token", "0.000005"), line("output_image", "image", "0.01")]
    actual = Usage(output_images=n, output_pixels=width * height * n,
                   output_image_tokens=n * -(-width * height // 1024), input_text_tokens=2)
    worst = worst_case_usage(n=n, per_call=None, rules=rules, prompt="a cat", reference_pixels=[])
    assert compute_cost(pricing, worst).total >= compute_cost(pricing, actual).total


@given(
    n=st.integers(1, 4), produced=st.integers(1, 4),
    sizes=st.lists(st.tuples(st.integers(64, 2048), st.integers(64, 2048)), min_size=1, max_size=4),
    references=st.lists(st.integers(1, 4_000_000), max_size=8),
    first=st.decimals(min_value=Decimal("0"), max_value=Decimal("0.1"), places=3),
    further=st.decimals(min_value=Decimal("0"), max_value=Decimal("0.1"), places=3),
)
def test_worst_case_of_a_tiered_line_covers_any_images_of_at_most_the_largest_size_and_every_reference(
    n: int, produced: int, sizes: list[tuple[int, int]], references: list[int],
    first: Decimal, further: Decimal,
) -> None:
    """One call per image, as on BFL; fewer images than asked, of any sizes up to the cap."""
    rules = SizeRules(mode="free", multiple_of=16, max_pixels=2048 * 2048)
    pricing = [tiered("output_image", str(first), str(further)), tiered("input_image", None, str(further))]
    made = [sizes[i % len(sizes)] for i in range(min(n, produced))]
    calls = len(made)
    actual = Usage(output_images=len(made), output_pixels=sum(w * h for w, h in made),
                   input_images=len(references) * calls, input_pixels=sum(references) * calls, requests=calls)
    worst = worst_case_usage(n=n, per_call=1, rules=rules, prompt="a cat", reference_pixels=references)
    assert compute_cost(pricing, worst).total >= compute_cost(pricing, actual).total


def test_output_text_tokens_bill_at_their_own_line() -> None:
    pricing = [PricingLine("output_image", "token", Decimal("0.00003")),
               PricingLine("output_text", "token", Decimal("0.00001"))]
    cost = compute_cost(pricing, Usage(output_image_tokens=1000, output_text_tokens=500))
    assert cost.total == Decimal("0.035") == cost.completion


def test_a_cost_the_upstream_states_is_the_cost() -> None:
    pricing = [PricingLine("input_image", "megapixel", Decimal("0.015")),
               PricingLine("output_image", "megapixel", Decimal("0.03"))]
    usage = Usage(output_pixels=2 * 1024 * 1024, input_pixels=1024 * 1024, stated_cost_usd=Decimal("0.06"))
    cost = compute_cost(pricing, usage)
    assert cost.total == Decimal("0.06")
    assert cost.prompt + cost.completion == cost.total
    assert cost.prompt == Decimal("0.012")  # the lines' split: 0.015 of 0.075


# A token rule of the shape OpenAI's gpt-image-2 calculator uses (the shipped rule's golden
# values are in test_golden_costs.py).
RULE = {"quality_factors": {"low": 16, "medium": 48, "high": 96}, "pixel_offset": 2_000_000,
        "pixel_divisor": 4_000_000, "streamed_tokens": 300}


def test_a_quality_the_token_rule_does_not_name_counts_as_its_costliest() -> None:
    from imagegate.billing import output_image_tokens

    by_quality = {q: output_image_tokens(RULE, 2048, 1152, q) for q in ("low", "medium", "high", "auto", None)}
    assert by_quality["low"] < by_quality["medium"] < by_quality["high"]
    assert by_quality["auto"] == by_quality[None] == by_quality["high"]


def test_a_streamed_image_adds_its_previews_to_the_token_rule() -> None:
    from imagegate.billing import output_image_tokens

    plain = output_image_tokens(RULE, 1024, 1536, "low")
    assert output_image_tokens(RULE, 1024, 1536, "low", streamed=True) == plain + 300
    assert output_image_tokens(RULE, 1536, 1024, "low") == plain  # orientation does not matter

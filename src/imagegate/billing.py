"""Pricing lines × usage → cost, in exact decimal arithmetic.

Pure functions: no I/O, no globals. Floats appear only when a cost is written into JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from imagegate.catalog import PricingLine
from imagegate.providers.base import Usage
from imagegate.sizing import MAX_EDGE, SizeRules

ZERO = Decimal(0)
#: Money is kept to the nano-USD (the ledger's unit).
NANO = Decimal("1e-9")


@dataclass(frozen=True, slots=True)
class Cost:
    total: Decimal
    prompt: Decimal  # input_* lines
    completion: Decimal  # output_* lines


def quantity(line: PricingLine, usage: Usage) -> Decimal:
    """How many units of ``line`` the usage consumed; megapixels of the line's own size."""
    if line.unit == "request":
        return Decimal(usage.requests)
    if line.billable == "output_image":
        return {
            "image": Decimal(usage.output_images),
            "megapixel": Decimal(usage.output_pixels) / line.megapixel_size,
            "token": Decimal(usage.output_image_tokens),
        }[line.unit]
    if line.billable in ("input_image", "input_reference"):
        return {
            "image": Decimal(usage.input_images),
            "megapixel": Decimal(usage.input_pixels) / line.megapixel_size,
            "token": Decimal(usage.input_image_tokens),
        }[line.unit]
    if line.billable == "input_text":
        return Decimal(usage.input_text_tokens) if line.unit == "token" else ZERO
    if line.billable == "output_text":
        return Decimal(usage.output_text_tokens) if line.unit == "token" else ZERO
    if line.billable == "input_font":
        return Decimal(usage.input_fonts) if line.unit == "image" else ZERO
    return ZERO


def amount(line: PricingLine, usage: Usage) -> Decimal:
    """What ``line`` charges for the usage.

    A line with a first-unit price charges it once per image, however small the image, and
    ``cost_usd`` for each unit beyond each image's first. Usage carries totals, which give
    exactly that for images of one size, as a generation's are:
    ``Σ max(0, units_i − 1) = max(0, Σ units_i − images)``.
    """
    units = quantity(line, usage)
    if line.first_unit_usd is None:
        return line.cost_usd * units
    images = usage.output_images if line.billable == "output_image" else usage.input_images
    return line.first_unit_usd * images + line.cost_usd * max(ZERO, units - images)


def applicable_lines(pricing: Iterable[PricingLine], tier: str | None) -> list[PricingLine]:
    """Lines that bill this generation.

    Lines without a ``variant`` always apply. Where lines of one (billable, unit) carry
    variants (``1k``, ``2k`` …), the one matching the applied tier applies; when none
    matches, the first of them is the base price.
    """
    groups: dict[tuple[str, str], list[PricingLine]] = {}
    for line in pricing:
        groups.setdefault((line.billable, line.unit), []).append(line)
    chosen = []
    for lines in groups.values():
        variants = [line for line in lines if line.variant is not None]
        chosen += [line for line in lines if line.variant is None]
        if variants:
            wanted = tier.lower() if tier else None
            match = next((line for line in variants if line.variant.lower() == wanted), None)
            chosen.append(match or variants[0])
    return chosen


def compute_cost(pricing: Iterable[PricingLine], usage: Usage, tier: str | None = None) -> Cost:
    """The pricing lines applied to the usage; where the upstream stated what it charged,
    that is the total, split between prompt and completion as the lines split it."""
    prompt = completion = ZERO
    for line in applicable_lines(pricing, tier):
        charged = amount(line, usage)
        if line.billable.startswith("output_"):
            completion += charged
        else:
            prompt += charged
    stated = usage.stated_cost_usd
    if stated is None:
        return Cost(total=prompt + completion, prompt=prompt, completion=completion)
    formula = prompt + completion
    prompt = (stated * prompt / formula).quantize(NANO) if formula else ZERO
    return Cost(total=stated, prompt=prompt, completion=stated - prompt)


def most_expensive_cost(pricing: Iterable[PricingLine], usage: Usage) -> Decimal:
    """The highest cost ``usage`` can have under any of the pricing's tier variants."""
    pricing = list(pricing)
    tiers = {None, *(line.variant for line in pricing if line.variant is not None)}
    return max(compute_cost(pricing, usage, tier).total for tier in tiers)


def max_output_pixels(rules: SizeRules) -> int:
    """The largest image an endpoint can produce, from its size rules."""
    if rules.mode == "table":
        return max(entry.width * entry.height for entry in rules.table)
    if rules.max_pixels is not None:
        return rules.max_pixels
    edge = rules.max_edge or MAX_EDGE
    return edge * edge


@dataclass(frozen=True, slots=True)
class TokenLimits:
    """The most tokens an endpoint declares it can bill (``None``: it declares none)."""

    output_per_image: int | None = None
    input_per_image: int | None = None
    output_text: int | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TokenLimits:
        return cls(
            output_per_image=settings.get("max_output_tokens_per_image"),
            input_per_image=settings.get("max_input_tokens_per_image"),
            output_text=settings.get("max_output_text_tokens"),
        )


def worst_case_usage(
    *,
    n: int,
    per_call: int | None,
    rules: SizeRules,
    prompt: str,
    reference_pixels: Iterable[int],
    limits: TokenLimits = TokenLimits(),
) -> Usage:
    """The most a generation on one endpoint can consume: what is reserved before it runs.

    Token counts are bounded from what is known up front: a prompt never has more tokens
    than bytes, and image tokens come from the endpoint's stated maximum (or its token rule,
    see :func:`output_image_tokens`) or, without one, one token per 1024 pixels.
    """
    calls = 1 if per_call is None else -(-n // per_call)
    pixels = max_output_pixels(rules)
    references = list(reference_pixels)
    output_tokens = limits.output_per_image or -(-pixels // 1024)
    input_tokens = sum(limits.input_per_image or -(-p // 1024) for p in references)
    return Usage(
        output_images=n,
        output_pixels=pixels * n,
        output_image_tokens=output_tokens * n,
        input_images=len(references) * calls,
        input_pixels=sum(references) * calls,
        input_image_tokens=input_tokens * calls,
        input_text_tokens=len(prompt.encode()) * calls,
        output_text_tokens=(limits.output_text or 0) * calls,
        requests=calls,
    )


def usage_problem(usage: Usage, ceiling: Usage, limits: TokenLimits) -> str | None:
    """Why an upstream's reported usage cannot be true, or ``None``: a count that is not a
    non-negative integer, a stated cost that is not a non-negative amount, or tokens beyond
    what the endpoint declares it can bill (``ceiling``, the generation's worst case)."""
    for name in _COUNTS:
        value = getattr(usage, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name} is {value!r}"
    stated = usage.stated_cost_usd
    if stated is not None and not (isinstance(stated, Decimal) and stated.is_finite() and stated >= 0):
        return f"stated_cost_usd is {stated!r}"
    declared = {
        "output_image_tokens": limits.output_per_image,
        "input_image_tokens": limits.input_per_image,
        "output_text_tokens": limits.output_text,
    }
    for name, limit in declared.items():
        if limit is not None and getattr(usage, name) > getattr(ceiling, name):
            return f"{name} is {getattr(usage, name)}, more than the endpoint's most ({getattr(ceiling, name)})"
    return None


_COUNTS = tuple(f.name for f in fields(Usage) if f.type in ("int", int))


def output_image_tokens(
    rule: Mapping[str, Any], width: int, height: int, quality: str | None, *, streamed: bool = False
) -> int:
    """The output image tokens of one image under an endpoint's ``output_image_tokens`` rule.

    Each quality has a factor f (``quality_factors``). An image with long edge L and short
    edge S counts f × s × (W × H + ``pixel_offset``) / ``pixel_divisor`` tokens, rounded up,
    where s is f × S / L rounded to the nearest whole number (halves up). A quality the rule
    does not name (``auto``, or none sent) counts as its costliest; a streamed image adds
    ``streamed_tokens`` for its previews.
    """
    factors: Mapping[str, int] = rule["quality_factors"]
    factor = factors[quality] if quality in factors else max(factors.values())
    long_edge, short_edge = max(width, height), min(width, height)
    short_factor = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    scaled = factor * short_factor * (width * height + rule["pixel_offset"])
    tokens = -(-scaled // rule["pixel_divisor"])
    return tokens + (rule.get("streamed_tokens", 0) if streamed else 0)


def usage_to_wire(usage: Usage, cost: Cost, *, billed: bool = True) -> dict:
    """``ImageGenerationUsage`` as OpenRouter returns it."""
    prompt_tokens = usage.input_text_tokens + usage.input_image_tokens
    completion_tokens = usage.output_image_tokens + usage.output_text_tokens
    total = cost.total if billed else ZERO
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": float(total),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost_details": {
            "upstream_inference_cost": float(cost.total),
            "upstream_inference_prompt_cost": float(cost.prompt),
            "upstream_inference_completions_cost": float(cost.completion),
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": usage.output_image_tokens},
    }

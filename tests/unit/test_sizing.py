"""Sizing math: parsing, nearest labels, and fitting requests to an endpoint's rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imagegate.errors import InvalidRequest
from imagegate.sizing import (
    ASPECT_RATIOS,
    TIERS,
    AppliedSize,
    FixedSize,
    SizeRequest,
    SizeRules,
    nearest_aspect_ratio,
    nearest_tier,
    parse_size,
    ratio_value,
    resolve_size,
)

FAST = settings(max_examples=200, deadline=None)
#: For properties that do not depend on the rules drawn (conflicts are checked first).
QUICK = settings(max_examples=100, deadline=None)

# --- endpoints a user would recognize ---

GPT_IMAGE_2 = SizeRules(
    mode="free",
    multiple_of=16,
    max_edge=3840,
    max_ratio=3,
    min_pixels=655_360,
    max_pixels=8_294_400,
)

GPT_IMAGE_1 = SizeRules(
    mode="table",
    table=(FixedSize(1024, 1024), FixedSize(1536, 1024), FixedSize(1024, 1536)),
)

_GEMINI_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
GEMINI = SizeRules(
    mode="table",
    table=tuple(
        FixedSize(w * scale, h * scale, resolution=tier, aspect_ratio=label)
        for tier, scale in (("1K", 1), ("2K", 2), ("4K", 4))
        for label, (w, h) in _GEMINI_1K.items()
    ),
)


def resolve(rules: SizeRules, **fields: str | None) -> AppliedSize:
    return resolve_size(SizeRequest(**fields), rules)


def ratio_error(w: float, h: float, label: str) -> float:
    return abs(math.log(w / h) - math.log(ratio_value(label)))


# --- parse_size ---


@pytest.mark.parametrize(
    ("size", "tier"),
    [("2k", "2K"), ("2K", "2K"), ("1.5k", "1.5K"), ("512", "512"), ("768", "768"), ("4k", "4K")],
)
def test_tier_names_parse_case_insensitively(size: str, tier: str) -> None:
    assert parse_size(size) == (tier, None)


@pytest.mark.parametrize("size", ["1024x768", "1024X768", "1024×768", " 1024 x 768 "])
def test_explicit_pixels_parse_with_any_separator(size: str) -> None:
    assert parse_size(size) == (None, (1024, 768))


def test_largest_explicit_pixels_are_accepted() -> None:
    assert parse_size("16384x16384") == (None, (16384, 16384))


@pytest.mark.parametrize(
    "size", ["foo", "", "auto", "1024", "1024x", "x768", "1024*768", "-1x5", "1e3x1e3", "3K"]
)
def test_unparseable_size_is_400_naming_the_param(size: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_size(size)
    assert caught.value.status == 400
    assert caught.value.metadata == {"param": "size"}


def test_unparseable_size_message_lists_what_is_accepted() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_size("foo")
    assert caught.value.message == (
        "size: expected a tier (512, 768, 1K, 1.5K, 2K, 4K) or explicit pixels like "
        '"1024x768", got "foo"'
    )


@pytest.mark.parametrize("size", ["0x768", "1024x0", "16385x16", "16x99999"])
def test_explicit_pixels_out_of_range_are_400(size: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_size(size)
    assert caught.value.metadata == {"param": "size"}


# --- ratios and tiers ---


@pytest.mark.parametrize(
    ("label", "value"),
    [("16:9", 16 / 9), ("2.35:1", 2.35), ("9:19.5", 9 / 19.5), ("1:1", 1.0), ("1:8", 0.125)],
)
def test_ratio_value_is_width_over_height(label: str, value: float) -> None:
    assert ratio_value(label) == pytest.approx(value)


def test_every_aspect_ratio_label_has_a_value() -> None:
    assert all(ratio_value(label) > 0 for label in ASPECT_RATIOS)


@pytest.mark.parametrize(
    ("w", "h", "label"),
    [(1920, 1080, "16:9"), (1000, 1000, "1:1"), (1080, 1920, "9:16"), (2350, 1000, "2.35:1"),
     (1536, 1024, "3:2"), (2100, 900, "21:9"), (1584, 672, "2.35:1")],
)  # fmt: skip
def test_nearest_aspect_ratio_picks_the_closest_label(w: int, h: int, label: str) -> None:
    assert nearest_aspect_ratio(w, h) == label


def test_nearest_aspect_ratio_ties_go_to_the_first_candidate() -> None:
    # 2:1 is exactly as far (in log space) from 1:1 as from 4:1.
    assert nearest_aspect_ratio(2000, 1000, ("1:1", "4:1")) == "1:1"
    assert nearest_aspect_ratio(2000, 1000, ("4:1", "1:1")) == "4:1"


@pytest.mark.parametrize(
    ("w", "h", "tier"),
    [(1024, 1024, "1K"), (1360, 768, "1K"), (2880, 2880, "2K"), (512, 512, "512"),
     (4096, 4096, "4K"), (100, 100, "512"), (16384, 16384, "4K"), (2752, 1536, "2K")],
)  # fmt: skip
def test_nearest_tier_compares_square_equivalent_edges(w: int, h: int, tier: str) -> None:
    assert nearest_tier(w, h) == tier


def test_nearest_tier_tie_goes_to_the_smaller_tier() -> None:
    # sqrt(1536 * 1024) is exactly the geometric middle of 1K and 1.5K.
    assert nearest_tier(1536, 1024) == "1K"


# --- free mode, gpt-image-2-like ---


def test_1k_square_is_exact() -> None:
    applied = resolve(GPT_IMAGE_2, resolution="1K", aspect_ratio="1:1")
    assert (applied.width, applied.height) == (1024, 1024)
    assert (applied.resolution, applied.aspect_ratio) == ("1K", "1:1")
    assert applied.clamped == frozenset() and applied.adjustments == ()


def test_16_9_at_1k_rounds_to_multiples_of_16_without_reporting_a_clamp() -> None:
    applied = resolve(GPT_IMAGE_2, resolution="1K", aspect_ratio="16:9")
    assert applied.width % 16 == 0 and applied.height % 16 == 0
    assert applied.width / applied.height == pytest.approx(16 / 9, rel=0.01)
    assert (applied.resolution, applied.aspect_ratio) == ("1K", "16:9")
    assert applied.clamped == frozenset()


def test_4k_square_is_held_to_the_pixel_budget_and_reports_resolution() -> None:
    applied = resolve(GPT_IMAGE_2, resolution="4K", aspect_ratio="1:1")
    assert applied.pixels <= 8_294_400
    assert applied.width == applied.height
    assert applied.clamped == {"resolution"}
    assert applied.resolution == "2K"
    assert applied.adjustments == ("resolution 4K → 2K (max 8,294,400 pixels)",)


def test_small_explicit_size_is_raised_to_min_pixels_and_reports_size() -> None:
    applied = resolve(GPT_IMAGE_2, size="256x256")
    assert applied.pixels >= 655_360
    assert applied.width == applied.height
    assert applied.clamped == {"size"}
    assert applied.adjustments[0].startswith("size 256x256 → ")
    assert "min 655,360 pixels" in applied.adjustments[0]


def test_ratio_beyond_max_ratio_is_clamped_to_it() -> None:
    applied = resolve(GPT_IMAGE_2, resolution="1K", aspect_ratio="8:1")
    assert applied.width / applied.height == pytest.approx(3, rel=0.01)
    assert "aspect_ratio" in applied.clamped
    assert any(note.startswith("aspect_ratio 8:1 → 3:1") for note in applied.adjustments)


def test_explicit_size_off_the_grid_is_rounded_and_reports_size() -> None:
    applied = resolve(GPT_IMAGE_2, size="1000x1000")
    assert (applied.width, applied.height) == (1008, 1008)
    assert applied.clamped == {"size"}
    assert applied.adjustments == ("size 1000x1000 → 1008x1008 (multiple of 16)",)


def test_explicit_size_within_the_rules_is_kept_exactly() -> None:
    applied = resolve(GPT_IMAGE_2, size="1536x1024")
    assert (applied.width, applied.height) == (1536, 1024)
    assert applied.clamped == frozenset()
    assert applied.aspect_ratio == "3:2"


def test_oversized_explicit_size_is_scaled_down_keeping_its_ratio() -> None:
    applied = resolve(GPT_IMAGE_2, size="4000x2000")
    assert applied.width <= 3840 and applied.pixels <= 8_294_400
    assert applied.width / applied.height == pytest.approx(2, rel=0.01)
    assert applied.clamped == {"size"}


def test_size_tier_that_gets_clamped_reports_size_not_resolution() -> None:
    applied = resolve(GPT_IMAGE_2, size="4k")
    assert applied.clamped == {"size"}
    assert applied.adjustments == ("size 4K → 2K (max 8,294,400 pixels)",)


def test_missing_fields_use_the_endpoint_defaults_without_reporting_clamps() -> None:
    rules = SizeRules(default_resolution="2K", default_aspect_ratio="16:9")
    applied = resolve(rules)
    assert (applied.resolution, applied.aspect_ratio) == ("2K", "16:9")
    assert applied.width / applied.height == pytest.approx(16 / 9, rel=0.01)


def test_auto_aspect_ratio_means_the_endpoint_default() -> None:
    rules = SizeRules(default_aspect_ratio="3:2")
    assert resolve(rules, aspect_ratio="auto") == resolve(rules)


def test_defaults_the_endpoint_cannot_honour_are_not_reported_as_clamps() -> None:
    # The client sent nothing, so nothing it asked for was changed.
    rules = SizeRules(max_pixels=500_000, default_resolution="1K")
    applied = resolve(rules)
    assert applied.pixels <= 500_000
    assert applied.clamped == frozenset()


def test_rules_that_admit_no_size_are_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        resolve(SizeRules(min_pixels=10_000_000, max_pixels=1_000_000))
    with pytest.raises(ValueError):
        resolve(SizeRules(mode="table", table=()))


# --- table mode ---


def test_table_picks_landscape_entry_for_16_9_and_reports_aspect_ratio() -> None:
    applied = resolve(GPT_IMAGE_1, resolution="1K", aspect_ratio="16:9")
    assert (applied.width, applied.height) == (1536, 1024)
    assert applied.clamped == {"aspect_ratio"}
    assert applied.aspect_ratio == "3:2"
    assert applied.adjustments == ("aspect_ratio 16:9 → 3:2 (nearest size this endpoint produces)",)


def test_table_picks_square_entry_for_1_1_with_nothing_clamped() -> None:
    applied = resolve(GPT_IMAGE_1, resolution="1K", aspect_ratio="1:1")
    assert (applied.width, applied.height) == (1024, 1024)
    assert applied.clamped == frozenset()


def test_table_picks_portrait_entry_for_portrait_ratios() -> None:
    applied = resolve(GPT_IMAGE_1, aspect_ratio="9:16")
    assert (applied.width, applied.height) == (1024, 1536)


def test_table_explicit_size_in_the_table_is_kept() -> None:
    applied = resolve(GPT_IMAGE_1, size="1024x1536")
    assert (applied.width, applied.height) == (1024, 1536)
    assert applied.clamped == frozenset()


def test_table_explicit_size_not_in_the_table_reports_size() -> None:
    applied = resolve(GPT_IMAGE_1, size="1792x1024")
    assert (applied.width, applied.height) == (1536, 1024)
    assert applied.clamped == {"size"}


def test_table_resolution_the_table_lacks_is_reported() -> None:
    applied = resolve(GPT_IMAGE_1, resolution="4K", aspect_ratio="1:1")
    assert (applied.width, applied.height) == (1024, 1024)
    assert applied.clamped == {"resolution"}


@pytest.mark.parametrize(
    ("tier", "label", "size"),
    [("1K", "1:1", (1024, 1024)), ("1K", "16:9", (1376, 768)), ("2K", "16:9", (2752, 1536)),
     ("4K", "9:16", (3072, 5504)), ("2K", "21:9", (3168, 1344))],
)  # fmt: skip
def test_labelled_table_returns_the_exact_labelled_entry(
    tier: str, label: str, size: tuple[int, int]
) -> None:
    applied = resolve(GEMINI, resolution=tier, aspect_ratio=label)
    assert (applied.width, applied.height) == size
    assert (applied.resolution, applied.aspect_ratio) == (tier, label)
    assert applied.clamped == frozenset()


def test_labelled_table_keeps_the_ratio_when_the_tier_is_missing() -> None:
    applied = resolve(GEMINI, resolution="512", aspect_ratio="16:9")
    assert (applied.width, applied.height) == (1376, 768)
    assert (applied.resolution, applied.aspect_ratio) == ("1K", "16:9")
    assert applied.clamped == {"resolution"}


def test_labelled_table_keeps_the_tier_when_the_ratio_is_missing() -> None:
    applied = resolve(GEMINI, resolution="2K", aspect_ratio="2.35:1")
    assert (applied.width, applied.height) == (3168, 1344)
    assert (applied.resolution, applied.aspect_ratio) == ("2K", "21:9")
    # 2.357 is within 2% of 2.35, so the client's ratio counts as honoured.
    assert applied.clamped == frozenset()


def test_labelled_table_with_unsupported_ratio_reports_aspect_ratio() -> None:
    applied = resolve(GEMINI, resolution="1K", aspect_ratio="8:1")
    assert applied.aspect_ratio == "21:9"
    assert applied.clamped == {"aspect_ratio"}
    assert applied.adjustments == ("aspect_ratio 8:1 → 21:9 (nearest size this endpoint produces)",)


# --- conflicting fields ---


def test_size_tier_conflicting_with_resolution_is_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve(GPT_IMAGE_2, size="2K", resolution="1K")
    assert caught.value.status == 400
    assert '"2K"' in caught.value.message and '"1K"' in caught.value.message


def test_size_tier_agreeing_with_resolution_is_fine() -> None:
    assert resolve(GPT_IMAGE_2, size="2k", resolution="2K") == resolve(GPT_IMAGE_2, resolution="2K")


def test_size_tier_combines_with_aspect_ratio() -> None:
    assert resolve(GEMINI, size="2K", aspect_ratio="16:9").width == 2752


def test_pixel_size_conflicting_with_aspect_ratio_is_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve(GPT_IMAGE_2, size="1536x1024", aspect_ratio="1:1")
    assert caught.value.status == 400
    assert "1536x1024" in caught.value.message and '"1:1"' in caught.value.message


def test_pixel_size_conflicting_with_resolution_is_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve(GPT_IMAGE_2, size="1024x1024", resolution="4K")
    assert "1024x1024" in caught.value.message and '"4K"' in caught.value.message


def test_pixel_size_agreeing_with_resolution_is_fine() -> None:
    applied = resolve(GPT_IMAGE_2, size="2048x2048", resolution="2K")
    assert (applied.width, applied.height) == (2048, 2048)
    assert applied.clamped == frozenset()


def test_pixel_size_within_one_percent_of_aspect_ratio_is_fine() -> None:
    applied = resolve(GPT_IMAGE_2, size="1360x768", aspect_ratio="16:9")
    assert (applied.width, applied.height, applied.aspect_ratio) == (1360, 768, "16:9")


def test_pixel_size_exactly_between_two_tiers_agrees_with_either() -> None:
    for tier in ("1K", "1.5K"):
        assert resolve(GPT_IMAGE_1, size="1536x1024", resolution=tier).resolution == tier


def test_unparseable_size_in_a_request_is_400() -> None:
    with pytest.raises(InvalidRequest):
        resolve(GPT_IMAGE_2, size="big")


# --- properties ---

tiers = st.sampled_from(list(TIERS))
labels = st.sampled_from(ASPECT_RATIOS)
multiples = st.sampled_from([1, 8, 16, 32, 64])


@st.composite
def free_rules(draw: st.DrawFn) -> SizeRules:
    """Random free-mode rules, satisfiable by construction: a square of edge ``s`` on the
    grid fits every limit drawn around it."""
    step = draw(multiples)
    s = step * draw(st.integers(1, 8192 // step))
    return SizeRules(
        mode="free",
        multiple_of=step,
        min_edge=draw(st.integers(1, s)),
        max_edge=draw(st.none() | st.integers(s, 16384)),
        min_pixels=draw(st.integers(0, s * s)),
        max_pixels=draw(st.none() | st.integers(s * s, 16384**2)),
        max_ratio=draw(st.none() | st.floats(1, 10)),
        default_resolution=draw(tiers),
        default_aspect_ratio=draw(labels),
    )


@st.composite
def table_rules(draw: st.DrawFn) -> SizeRules:
    entry = st.builds(
        FixedSize,
        width=st.integers(16, 8192),
        height=st.integers(16, 8192),
        resolution=st.none() | tiers,
        aspect_ratio=st.none() | labels,
    )
    return SizeRules(
        mode="table",
        table=tuple(draw(st.lists(entry, min_size=1, max_size=8))),
        default_resolution=draw(tiers),
        default_aspect_ratio=draw(labels),
    )


def _cased(draw: st.DrawFn, tier: str) -> str:
    return tier.lower() if draw(st.booleans()) else tier


@st.composite
def tier_requests(draw: st.DrawFn) -> SizeRequest:
    resolution = draw(st.none() | tiers)
    size_tier = draw(st.none() | (st.just(resolution) if resolution else tiers))
    return SizeRequest(
        resolution=resolution,
        aspect_ratio=draw(st.none() | st.just("auto") | labels),
        size=_cased(draw, size_tier) if size_tier else None,
    )


def _tier_gap(w: int, h: int, tier: str) -> float:
    """How much farther ``tier`` is than the nearest tier (0 for the nearest)."""
    edge = math.log(w * h) / 2
    distances = {t: abs(math.log(e) - edge) for t, e in TIERS.items()}
    return distances[tier] - min(distances.values())


pixel_sizes = st.tuples(st.integers(1, 16384), st.integers(1, 16384))


@st.composite
def pixel_requests(draw: st.DrawFn) -> SizeRequest:
    """Explicit pixels, with a resolution and aspect_ratio that agree with them (or none)."""
    w, h = draw(pixel_sizes)
    agreeing = [label for label in ASPECT_RATIOS if ratio_error(w, h, label) < 0.0099]
    return SizeRequest(
        resolution=draw(st.none() | st.just(nearest_tier(w, h))),
        aspect_ratio=draw(st.none() | st.just("auto") | st.sampled_from(agreeing or [None])),
        size=draw(st.sampled_from([f"{w}x{h}", f"{w}X{h}", f"{w}×{h}"])),
    )


requests = tier_requests() | pixel_requests()


def sent_fields(request: SizeRequest) -> set[str]:
    sent = {"size"} if request.size else set()
    if request.resolution:
        sent.add("resolution")
    if request.aspect_ratio not in (None, "auto"):
        sent.add("aspect_ratio")
    return sent


def assert_well_formed(applied: AppliedSize, request: SizeRequest) -> None:
    assert applied.resolution in TIERS
    assert applied.aspect_ratio in ASPECT_RATIOS
    assert applied.clamped <= sent_fields(request)
    assert len(applied.adjustments) == len(applied.clamped)


def assert_satisfies_free(rules: SizeRules, w: int, h: int) -> None:
    step = rules.multiple_of
    assert w % step == 0 and h % step == 0
    assert rules.min_edge <= min(w, h)
    assert max(w, h) <= (rules.max_edge or 16384)
    assert rules.min_pixels <= w * h
    assert rules.max_pixels is None or w * h <= rules.max_pixels
    assert rules.max_ratio is None or max(w, h) / min(w, h) <= rules.max_ratio + 1e-9


@FAST
@given(rules=free_rules(), request=requests)
def test_free_mode_result_always_satisfies_the_rules(
    rules: SizeRules, request: SizeRequest
) -> None:
    applied = resolve_size(request, rules)
    assert_satisfies_free(rules, applied.width, applied.height)
    assert_well_formed(applied, request)
    assert resolve_size(request, rules) == applied


@st.composite
def narrow_budget_rules(draw: st.DrawFn) -> SizeRules:
    """Free-mode rules whose pixel budget is a sliver around one square (down to a single
    pixel count), so rounding the fitted size rarely lands inside it."""
    step = draw(multiples)
    s = step * draw(st.integers(1, 4096 // step))
    slack = draw(st.integers(0, s))
    return SizeRules(
        multiple_of=step,
        min_edge=1,
        min_pixels=s * s - draw(st.integers(0, slack)),
        max_pixels=s * s + draw(st.integers(0, slack)),
        max_ratio=draw(st.none() | st.floats(1, 10)),
    )


@settings(max_examples=100, deadline=None)
@given(rules=narrow_budget_rules(), request=requests)
def test_free_mode_finds_a_size_inside_a_narrow_pixel_budget(
    rules: SizeRules, request: SizeRequest
) -> None:
    applied = resolve_size(request, rules)
    assert_satisfies_free(rules, applied.width, applied.height)
    assert_well_formed(applied, request)


def test_exact_pixel_budget_picks_the_nearest_shape_that_has_that_many_pixels() -> None:
    rules = SizeRules(multiple_of=1, min_edge=1, min_pixels=1_048_576, max_pixels=1_048_576)
    applied = resolve(rules, resolution="1K", aspect_ratio="16:9")
    # 2^20 pixels only come in power-of-two shapes; 1:1 is nearer to 16:9 than 4:1 is.
    assert (applied.width, applied.height) == (1024, 1024)
    assert applied.adjustments == ("aspect_ratio 16:9 → 1:1 (nearest size on the 1-pixel grid)",)


@FAST
@given(rules=table_rules(), request=requests)
def test_table_mode_result_is_always_a_table_entry(rules: SizeRules, request: SizeRequest) -> None:
    applied = resolve_size(request, rules)
    entries = {(e.width, e.height) for e in rules.table}
    assert (applied.width, applied.height) in entries
    assert resolve_size(request, rules) == applied
    assert applied.clamped <= sent_fields(request)
    assert len(applied.adjustments) == len(applied.clamped)


@FAST
@given(rules=table_rules(), data=st.data())
def test_table_mode_keeps_an_explicit_size_that_is_in_the_table(
    rules: SizeRules, data: st.DataObject
) -> None:
    entry = data.draw(st.sampled_from(rules.table))
    applied = resolve_size(SizeRequest(size=f"{entry.width}x{entry.height}"), rules)
    assert (applied.width, applied.height) == (entry.width, entry.height)
    assert applied.clamped == frozenset()


@FAST
@given(rules=table_rules(), tier=tiers, label=labels, data=st.data())
def test_table_mode_returns_the_entry_labelled_with_the_requested_tier_and_ratio(
    rules: SizeRules, tier: str, label: str, data: st.DataObject
) -> None:
    w, h = data.draw(st.integers(16, 8192)), data.draw(st.integers(16, 8192))
    at = data.draw(st.integers(0, len(rules.table)))
    table = (*rules.table[:at], FixedSize(w, h, tier, label), *rules.table[at:])
    first = next(e for e in table if (e.resolution, e.aspect_ratio) == (tier, label))
    applied = resolve_size(
        SizeRequest(resolution=tier, aspect_ratio=label), SizeRules(mode="table", table=table)
    )
    assert (applied.width, applied.height) == (first.width, first.height)
    assert (applied.resolution, applied.aspect_ratio) == (tier, label)
    assert applied.clamped == frozenset()


@FAST
@given(step=multiples, w=st.integers(1, 256), h=st.integers(1, 256), data=st.data())
def test_free_mode_keeps_an_explicit_size_the_rules_allow(
    step: int, w: int, h: int, data: st.DataObject
) -> None:
    w, h = w * step, h * step
    assume(max(w, h) <= 16384)
    rules = SizeRules(
        multiple_of=step,
        min_edge=data.draw(st.integers(1, min(w, h))),
        max_edge=data.draw(st.none() | st.integers(max(w, h), 16384)),
        min_pixels=data.draw(st.integers(0, w * h)),
        max_pixels=data.draw(st.none() | st.integers(w * h, 16384**2)),
        max_ratio=data.draw(st.none() | st.floats(max(w, h) / min(w, h), 300)),
    )
    applied = resolve_size(SizeRequest(size=f"{w}x{h}"), rules)
    assert (applied.width, applied.height) == (w, h)
    assert applied.clamped == frozenset()


@FAST
@given(step=multiples, request=tier_requests())
def test_free_mode_without_limits_honours_every_tier_and_ratio(
    step: int, request: SizeRequest
) -> None:
    applied = resolve_size(request, SizeRules(multiple_of=step, min_edge=1))
    assert applied.clamped == frozenset()
    tier = request.resolution or (request.size.upper() if request.size else "1K")
    assert applied.resolution == tier


@QUICK
@given(rules=free_rules() | table_rules(), size=pixel_sizes, data=st.data())
def test_pixel_size_conflicting_with_resolution_always_raises(
    rules: SizeRules, size: tuple[int, int], data: st.DataObject
) -> None:
    w, h = size
    far = [t for t in TIERS if _tier_gap(w, h, t) > 1e-6]
    resolution = data.draw(st.sampled_from(far))
    with pytest.raises(InvalidRequest):
        resolve_size(SizeRequest(size=f"{w}x{h}", resolution=resolution), rules)


@QUICK
@given(rules=free_rules() | table_rules(), size=pixel_sizes, data=st.data())
def test_pixel_size_conflicting_with_aspect_ratio_always_raises(
    rules: SizeRules, size: tuple[int, int], data: st.DataObject
) -> None:
    w, h = size
    far = [label for label in ASPECT_RATIOS if ratio_error(w, h, label) > math.log(1.01) + 1e-6]
    label = data.draw(st.sampled_from(far))
    with pytest.raises(InvalidRequest):
        resolve_size(SizeRequest(size=f"{w}x{h}", aspect_ratio=label), rules)


@QUICK
@given(rules=free_rules() | table_rules(), pair=st.permutations(list(TIERS)))
def test_size_tier_conflicting_with_resolution_always_raises(
    rules: SizeRules, pair: list[str]
) -> None:
    with pytest.raises(InvalidRequest):
        resolve_size(SizeRequest(size=pair[0], resolution=pair[1]), rules)


@QUICK
@given(size=pixel_sizes)
def test_pixel_sizes_round_trip_through_parse_size(size: tuple[int, int]) -> None:
    assert parse_size(f"{size[0]}x{size[1]}") == (None, size)

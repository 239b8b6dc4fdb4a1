"""Pure sizing math: (resolution, aspect_ratio, size) + an endpoint's rules → native pixels.

No I/O, no globals beyond constant tables. Every function is deterministic.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from imagegate.errors import InvalidRequest

#: Resolution tiers of the spec and the square edge each one stands for.
TIERS: dict[str, int] = {"512": 512, "768": 768, "1K": 1024, "1.5K": 1536, "2K": 2048, "4K": 4096}

#: Every aspect ratio of the spec (official enum plus the live superset), ``auto`` excluded.
ASPECT_RATIOS: tuple[str, ...] = (
    "1:1", "1:2", "1:4", "1:8", "2:1", "2:3", "2.35:1", "3:2", "3:4", "4:1", "4:3", "4:5",
    "5:2", "5:4", "5:7", "7:5", "8:1", "9:16", "16:9", "9:19.5", "19.5:9", "9:20", "20:9",
    "9:21", "21:9",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FixedSize:
    """One entry of an endpoint's size table, optionally labelled with the tier and ratio
    the upstream calls it by (e.g. Gemini's ``imageSize`` / ``aspectRatio``)."""

    width: int
    height: int
    resolution: str | None = None
    aspect_ratio: str | None = None


@dataclass(frozen=True, slots=True)
class SizeRules:
    """How one endpoint produces pixels.

    ``table``: only the sizes listed. ``free``: any width×height within the constraints.
    """

    mode: Literal["free", "table"] = "free"
    table: tuple[FixedSize, ...] = ()
    multiple_of: int = 16
    min_pixels: int = 0
    max_pixels: int | None = None
    min_edge: int = 16
    max_edge: int | None = None
    #: Largest allowed long-edge / short-edge ratio.
    max_ratio: float | None = None
    default_resolution: str = "1K"
    default_aspect_ratio: str = "1:1"


@dataclass(frozen=True, slots=True)
class SizeRequest:
    """The client's three sizing fields, as sent (``None`` when absent)."""

    resolution: str | None = None
    aspect_ratio: str | None = None
    size: str | None = None


@dataclass(frozen=True, slots=True)
class AppliedSize:
    """What sizing chose, and what it had to change to get there."""

    width: int
    height: int
    #: Tier applied (for an explicit pixel size: the nearest tier).
    resolution: str
    #: Ratio label applied (for an explicit pixel size: the nearest label of ASPECT_RATIOS).
    aspect_ratio: str
    #: Request fields whose value was not honoured exactly ("size", "resolution", "aspect_ratio").
    clamped: frozenset[str] = frozenset()
    #: Human-readable notes of each adjustment, in order.
    adjustments: tuple[str, ...] = ()

    @property
    def pixels(self) -> int:
        return self.width * self.height


#: Largest edge any request or rule may reach; also the free-mode edge limit when an
#: endpoint sets none.
MAX_EDGE = 16384

#: Relative ratio error an explicit pixel size may have against a sent ``aspect_ratio``.
_SIZE_RATIO_TOLERANCE = math.log(1.01)
#: Relative ratio error still reported as "the ratio you asked for".
_RATIO_HONOURED = math.log(1.02)
#: Two log-distances closer than this are a tie (keeps float noise out of tie-breaking).
_TIE = 1e-9

_TIERS_BY_FOLDED = {tier.casefold(): tier for tier in TIERS}
_PIXELS = re.compile(r"\s*([0-9]{1,6})\s*[xX×]\s*([0-9]{1,6})\s*")
_TABLE_NOTE = "nearest size this endpoint produces"


# --- public functions ---


def parse_size(size: str) -> tuple[str | None, tuple[int, int] | None]:
    """``(tier, None)`` for a tier name (any case), ``(None, (w, h))`` for ``"WxH"``."""
    if isinstance(size, str):
        tier = _TIERS_BY_FOLDED.get(size.strip().casefold())
        if tier is not None:
            return tier, None
        match = _PIXELS.fullmatch(size)
        if match:
            width, height = int(match[1]), int(match[2])
            if 1 <= width <= MAX_EDGE and 1 <= height <= MAX_EDGE:
                return None, (width, height)
            raise InvalidRequest(
                f"size: each edge must be between 1 and {MAX_EDGE} pixels, got {size!r}",
                metadata={"param": "size"},
            )
    tiers = ", ".join(TIERS)
    raise InvalidRequest(
        f'size: expected a tier ({tiers}) or explicit pixels like "1024x768", got "{size}"',
        metadata={"param": "size"},
    )


def ratio_value(label: str) -> float:
    """Width / height of a ratio label: ``"16:9"`` → 1.777…, ``"9:19.5"`` → 0.4615…"""
    width, sep, height = label.partition(":")
    if not sep:
        raise ValueError(f"not an aspect ratio label: {label!r}")
    return float(width) / float(height)


def nearest_aspect_ratio(
    width: float, height: float, candidates: Sequence[str] = ASPECT_RATIOS
) -> str:
    """The label whose ratio is nearest to ``width / height`` in log space (first on ties)."""
    target = math.log(width / height)
    return _nearest(candidates, lambda label: abs(math.log(ratio_value(label)) - target))


def nearest_tier(width: float, height: float) -> str:
    """The tier whose square edge is nearest to ``sqrt(width * height)`` in log space
    (first on ties, so 1536x1024 — exactly between 1K and 1.5K — is "1K")."""
    return _nearest(TIERS, _tier_distance(width, height))


# Pure and immutable both ways, and most traffic repeats a handful of sizes per endpoint.
@functools.lru_cache(maxsize=4096)
def resolve_size(request: SizeRequest, rules: SizeRules) -> AppliedSize:
    """Turn the client's sizing fields into the pixels this endpoint will produce.

    Raises ``InvalidRequest`` when the fields contradict each other; never for what the
    endpoint cannot do — that is fitted, and listed in ``clamped`` / ``adjustments``.
    """
    target = _target(request, rules)
    entry: FixedSize | None = None
    if rules.mode == "table":
        entry = _pick_entry(rules.table, target)
        width, height = entry.width, entry.height
        why = _Why(ratio=_TABLE_NOTE, size=_TABLE_NOTE, rounding=_TABLE_NOTE)
    else:
        width, height, why = _fit_free(rules, target.width, target.height)

    if entry is not None and entry.resolution:
        resolution = entry.resolution
    elif _is_nearest_tier(width, height, target.tier):
        resolution = target.tier
    else:
        resolution = nearest_tier(width, height)
    ratio_kept = target.ratio_label is not None and (
        (entry is not None and entry.aspect_ratio == target.ratio_label)
        or _ratio_error(width, height, ratio_value(target.ratio_label)) <= _RATIO_HONOURED
    )
    if entry is not None and entry.aspect_ratio:
        aspect_ratio = entry.aspect_ratio
    elif ratio_kept:
        assert target.ratio_label is not None
        aspect_ratio = target.ratio_label
    else:
        aspect_ratio = nearest_aspect_ratio(width, height)

    # Only what the client sent can be "not honoured"; defaults and "auto" never are.
    clamped: list[str] = []
    notes: list[str] = []
    if target.pixels is not None and target.pixels != (width, height):
        clamped.append("size")
        w0, h0 = target.pixels
        reasons = dict.fromkeys(r for r in (why.ratio, why.size) if r) or [why.rounding]
        notes.append(f"size {w0}x{h0} → {width}x{height} ({', '.join(reasons)})")
    if target.tier_fields and resolution != target.tier:
        reason = why.size or why.ratio or why.rounding
        for field in target.tier_fields:
            clamped.append(field)
            notes.append(f"{field} {target.tier} → {resolution} ({reason})")
    if target.ratio_sent and not ratio_kept:
        clamped.append("aspect_ratio")
        shown = aspect_ratio if entry is not None else _ratio_text(width, height)
        reason = why.ratio or why.rounding
        notes.append(f"aspect_ratio {target.ratio_label} → {shown} ({reason})")

    return AppliedSize(
        width=width,
        height=height,
        resolution=resolution,
        aspect_ratio=aspect_ratio,
        clamped=frozenset(clamped),
        adjustments=tuple(notes),
    )


# --- helpers ---


@dataclass(frozen=True, slots=True)
class _Target:
    """The size the client asked for, before the endpoint's rules."""

    width: float
    height: float
    #: Tier to compare the result with (requested, default, or nearest to explicit pixels).
    tier: str
    #: Request fields that carried ``tier`` ("size", "resolution"); empty when defaulted.
    tier_fields: tuple[str, ...]
    #: Ratio label to compare the result with; None for explicit pixels without one.
    ratio_label: str | None
    ratio_sent: bool
    #: Explicit pixels, when ``size`` was ``"WxH"``.
    pixels: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class _Why:
    """Which limit moved the size, as note text (None: that part was not limited)."""

    ratio: str | None = None
    size: str | None = None
    rounding: str = ""


def _target(request: SizeRequest, rules: SizeRules) -> _Target:
    size_tier, pixels = (None, None) if request.size is None else parse_size(request.size)
    ratio_sent = request.aspect_ratio not in (None, "auto")
    sent_label = request.aspect_ratio if ratio_sent else None

    if pixels is not None:
        width, height = pixels
        if request.resolution is not None and not _is_nearest_tier(
            width, height, request.resolution
        ):
            raise InvalidRequest(
                f'size "{request.size}" is nearest to tier {nearest_tier(width, height)}, '
                f'which conflicts with resolution "{request.resolution}"; '
                "send one of them, or values that agree",
                metadata={"param": "size"},
            )
        if sent_label is not None and (
            _ratio_error(width, height, ratio_value(sent_label)) > _SIZE_RATIO_TOLERANCE
        ):
            raise InvalidRequest(
                f'size "{request.size}" (ratio {width / height:.4g}) conflicts with '
                f'aspect_ratio "{sent_label}" (ratio {ratio_value(sent_label):.4g}); '
                "send one of them, or values that agree",
                metadata={"param": "size"},
            )
        return _Target(
            width=width,
            height=height,
            tier=request.resolution or nearest_tier(width, height),
            tier_fields=("resolution",) if request.resolution else (),
            ratio_label=sent_label,
            ratio_sent=ratio_sent,
            pixels=pixels,
        )

    if size_tier is not None and request.resolution not in (None, size_tier):
        raise InvalidRequest(
            f'size "{request.size}" conflicts with resolution "{request.resolution}"; '
            "send one of them, or the same tier in both",
            metadata={"param": "size"},
        )
    tier = size_tier or request.resolution or rules.default_resolution
    label = sent_label or rules.default_aspect_ratio
    pixels_total = TIERS[tier] ** 2
    ratio = ratio_value(label)
    return _Target(
        width=math.sqrt(pixels_total * ratio),
        height=math.sqrt(pixels_total / ratio),
        tier=tier,
        tier_fields=tuple(
            field
            for field, value in (("size", size_tier), ("resolution", request.resolution))
            if value is not None
        ),
        ratio_label=label,
        ratio_sent=ratio_sent,
    )


def _pick_entry(table: Sequence[FixedSize], target: _Target) -> FixedSize:
    if not table:
        raise ValueError("size rules in table mode need at least one size")
    if target.pixels is not None:
        exact = [e for e in table if (e.width, e.height) == target.pixels]
    else:
        exact = [
            e for e in table if e.resolution == target.tier and e.aspect_ratio == target.ratio_label
        ]
    if exact:
        return exact[0]

    log_ratio = math.log(target.width / target.height)
    log_pixels = math.log(target.width) + math.log(target.height)

    # Shape first (it is what the client sees), then the upstream's own labels, then size.
    def key(indexed: tuple[int, FixedSize]) -> tuple[int, float, int, float, int]:
        index, e = indexed
        ratio_error = abs(math.log(e.width / e.height) - log_ratio)
        pixel_error = abs(math.log(e.width) + math.log(e.height) - log_pixels)
        return (
            int(target.ratio_label is None or e.aspect_ratio != target.ratio_label),
            round(ratio_error, 9),
            int(e.resolution != target.tier),
            round(pixel_error, 9),
            index,
        )

    return min(enumerate(table), key=key)[1]


def _fit_free(rules: SizeRules, width: float, height: float) -> tuple[int, int, _Why]:
    """The allowed size nearest to ``width``×``height``: keep the ratio if the rules allow
    it, then the pixel count, then round the edges to the grid."""
    step = max(1, rules.multiple_of)
    lo = _ceil_to(max(1, rules.min_edge), step)
    hi = _floor_to(min(rules.max_edge or MAX_EDGE, MAX_EDGE), step)
    # Work in u = log(w/h), v = log(w*h): every rule is then a bound on u, v or |u| ± v.
    log_lo, log_hi = math.log(lo), math.log(hi)
    v_min = max(2 * log_lo, math.log(rules.min_pixels) if rules.min_pixels > 0 else -math.inf)
    v_max = min(2 * log_hi, math.log(rules.max_pixels) if rules.max_pixels else math.inf)
    if lo > hi or v_min > v_max:
        raise ValueError(f"size rules admit no size at all: {rules}")

    u0 = math.log(width) - math.log(height)
    v0 = math.log(width) + math.log(height)

    # The edge box admits the widest ratio at v = log(lo*hi), within the pixel budget.
    v_widest = min(max(log_lo + log_hi, v_min), v_max)
    u_box = min(v_widest - 2 * log_lo, 2 * log_hi - v_widest)
    u_rule = math.log(rules.max_ratio) if rules.max_ratio else math.inf
    ratio_reason = None
    u = u0
    if abs(u0) > min(u_box, u_rule):
        u = math.copysign(min(u_box, u_rule), u0)
        ratio_reason = (
            f"max ratio {rules.max_ratio:g}:1"
            if u_rule <= u_box
            else f"edges {lo}–{hi} within the pixel limits"
        )

    size_reason = None
    v_floor = max(v_min, 2 * log_lo + abs(u))
    v_ceil = min(v_max, 2 * log_hi - abs(u))
    v = min(max(v0, v_floor), v_ceil)
    if v0 < v_floor:
        by_pixels = rules.min_pixels > 0 and math.log(rules.min_pixels) >= 2 * log_lo + abs(u)
        size_reason = f"min {rules.min_pixels:,} pixels" if by_pixels else f"min edge {lo}"
    elif v0 > v_ceil:
        by_pixels = rules.max_pixels and math.log(rules.max_pixels) <= 2 * log_hi - abs(u)
        size_reason = f"max {rules.max_pixels:,} pixels" if by_pixels else f"max edge {hi}"

    fitted_w, fitted_h = math.exp((v + u) / 2), math.exp((v - u) / 2)
    w, h, rounded = _snap(rules, step, lo, hi, fitted_w, fitted_h)
    rounding = f"multiple of {step}" if rounded else f"nearest size on the {step}-pixel grid"
    return w, h, _Why(ratio=ratio_reason, size=size_reason, rounding=rounding)


def _snap(
    rules: SizeRules, step: int, lo: int, hi: int, width: float, height: float
) -> tuple[int, int, bool]:
    """Nearest allowed grid point to a fitted (already allowed) real size, and whether it
    is a plain rounding of it.

    Tries the grid points around it first; only when rounding cannot satisfy the rules
    (e.g. a very narrow pixel budget) does it scan every allowed width.
    """
    log_ratio = math.log(width / height)
    tier = nearest_tier(width, height)

    # Rather a point that keeps the tier and the ratio (within what resolve_size reports as
    # honoured) than the geometrically nearest one, so plain rounding never shows up as a
    # clamp; among those, the ratio within 1%, then the nearest.
    def cost(w: int, h: int) -> tuple[int, bool, float, int, int]:
        ratio_error = abs(math.log(w / h) - log_ratio)
        return (
            (ratio_error > _RATIO_HONOURED) + (nearest_tier(w, h) != tier),
            ratio_error > _SIZE_RATIO_TOLERANCE,
            math.log(w / width) ** 2 + math.log(h / height) ** 2,
            w,
            h,
        )

    # Grid points around the fitted size, plus, for a wider band of each edge, the other
    # edge that keeps the ratio (on a coarse grid the nearest point can be 3% off).
    ratio = width / height
    band_w = [_floor_to(width, step) + k * step for k in range(-4, 6)]
    band_h = [_floor_to(height, step) + k * step for k in range(-4, 6)]
    near = {(w, h) for w in band_w[2:8] for h in band_h[2:8]}
    for w in band_w:
        near.update((w, h) for h in (_floor_to(w / ratio, step), _ceil_to(w / ratio, step)))
    for h in band_h:
        near.update((w, h) for w in (_floor_to(h * ratio, step), _ceil_to(h * ratio, step)))
    near = {(w, h) for w, h in near if _allowed(rules, step, lo, hi, w, h)}
    if near:
        return *min(near, key=lambda wh: cost(*wh)), True

    best: tuple[int, int] | None = None
    for w in range(lo, hi + 1, step):
        h_lo, h_hi = lo, hi
        if rules.min_pixels:
            h_lo = max(h_lo, _ceil_to(-(-rules.min_pixels // w), step))
        if rules.max_pixels:
            h_hi = min(h_hi, _floor_to(rules.max_pixels // w, step))
        if rules.max_ratio:
            h_lo = max(h_lo, _ceil_to(w / rules.max_ratio - _TIE, step))
            h_hi = min(h_hi, _floor_to(w * rules.max_ratio + _TIE, step))
        if h_lo > h_hi:
            continue
        h = min(max(round(height / step) * step, h_lo), h_hi)
        for candidate in (h - step, h, h + step):
            if _allowed(rules, step, lo, hi, w, candidate) and (
                best is None or cost(w, candidate) < cost(*best)
            ):
                best = (w, candidate)
    if best is None:
        raise ValueError(f"size rules admit no size on the {step}-pixel grid: {rules}")
    return *best, False


def _allowed(rules: SizeRules, step: int, lo: int, hi: int, w: int, h: int) -> bool:
    return (
        w % step == 0
        and h % step == 0
        and lo <= w <= hi
        and lo <= h <= hi
        and rules.min_pixels <= w * h
        and (rules.max_pixels is None or w * h <= rules.max_pixels)
        and (rules.max_ratio is None or max(w, h) <= rules.max_ratio * min(w, h) + _TIE)
    )


def _nearest(candidates: Iterable[str], distance: Callable[[str], float]) -> str:
    best, best_distance = None, math.inf
    for candidate in candidates:
        d = distance(candidate)
        if d < best_distance - _TIE:
            best, best_distance = candidate, d
    if best is None:
        raise ValueError("no candidates")
    return best


def _tier_distance(width: float, height: float) -> Callable[[str], float]:
    log_edge = (math.log(width) + math.log(height)) / 2
    return lambda tier: abs(math.log(TIERS[tier]) - log_edge)


def _is_nearest_tier(width: float, height: float, tier: str) -> bool:
    """True when ``tier`` is nearest, or tied for nearest (1536x1024 is 1K and 1.5K)."""
    distance = _tier_distance(width, height)
    return distance(tier) <= min(map(distance, TIERS)) + _TIE


def _ratio_error(width: float, height: float, ratio: float) -> float:
    return abs(math.log(width / height) - math.log(ratio))


def _ratio_text(width: int, height: int) -> str:
    label = nearest_aspect_ratio(width, height)
    if _ratio_error(width, height, ratio_value(label)) <= _RATIO_HONOURED:
        return label
    return f"{width / height:.3g}:1" if width >= height else f"1:{height / width:.3g}"


def _ceil_to(value: float, step: int) -> int:
    return math.ceil(value / step) * step


def _floor_to(value: float, step: int) -> int:
    return math.floor(value / step) * step

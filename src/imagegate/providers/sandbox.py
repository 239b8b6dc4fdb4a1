"""The built-in sandbox provider (slug ``imagegate``): a real, offline, deterministic image
synthesizer for building apps against the API without an upstream or a bill.

It draws abstract pictures — a gradient background, a soft glow, grain, and shapes — whose
look follows the request:

* **prompt**: a hash of the prompt picks the palette scheme, the gradient and the shape
  kinds; colour words ("a *red* circle") become the dominant colours (a colour word next to
  "background"/"sky" or after "on"/"over"/"against" becomes the background) and shape words
  (circle, square, triangle, star, stripes, grid, ring, hexagon, diamond, dots ...) pick the
  shapes, the first one drawn large ("hero") near the centre;
* **seed**: positions, sizes and rotations come from ``(seed, prompt, image index,
  references)``, so the same request is byte-identical, another seed or index differs, and
  ``seed=None`` draws a fresh seed per call;
* **references**: each is shrunk in the worker thread (``draft`` + ``thumbnail``); its mean and
  dominant colours join the palette (as the base palette when the prompt names no colour) and
  up to :data:`MAX_REFERENCE_TILES` framed thumbnails are pasted bottom right;
* **quality**: more shapes, supersampling, outlines and grain at higher levels;
* **size / n / output_format / output_compression / background**: exact pixels, ``n``
  different images, png/jpeg/webp through :func:`imagegate.imaging.encode`, or SVG markup of
  the same scene; ``transparent`` leaves the background fully transparent (shapes opaque).
  A margin of :data:`INSET` of each edge is kept free of shapes, so corners are background.
* **stream**: two previews per image before it (a blocky one, then a blurred one, encoded like
  the final image) or, for SVG, the markup in ``draft`` text chunks;
* **options** (``job.options``): ``latency_ms``, ``fail`` and ``fail_rate`` inject latency and
  failures (see :data:`FAIL_MODES`); unknown keys are ignored, wrong types are a 400. An
  operator's catalog can give an endpoint default options under ``settings.options`` (a
  sandbox endpoint that is always slow or always failing, for testing clients and fallbacks);
  the request's own options win.

Usage is computed, not invented: 1 MP = 1024x1024 px, one image token per started 1024 px,
one text token per started 4 prompt characters.

All pixel work runs on :data:`imagegate.imaging.EXECUTOR`: a 1024x1024 PNG takes well under
a second, and 4096x4096 (drawn at about 4 MP, then resized) a couple of seconds.
"""

from __future__ import annotations

import asyncio
import colorsys
import functools
import hashlib
import io
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import pybase64
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageOps, ImageStat

from imagegate import errors, imaging
from imagegate.providers.base import (
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    Partial,
    Progress,
    ProviderEvent,
    ProviderJob,
    ReferenceImage,
    TextChunk,
    Usage,
)

SLUG = "imagegate"
NAME = "imagegate sandbox"

OUTPUT_FORMATS = ("png", "jpeg", "webp", "svg")

# --- options ---
MAX_LATENCY_MS = 600_000
PROGRESS_INTERVAL_S = 1.0
SLEEP_STEP_S = 0.25
#: ``fail`` option values: each raises the error an upstream failure of that kind maps to.
FAIL_MODES = (
    "upstream_error",
    "overloaded",
    "timeout",
    "rate_limit",
    "content_policy",
    "bad_key",
    "after_first_image",
)
RATE_LIMIT_RETRY_AFTER_S = "2"

# --- usage ---
PIXELS_PER_MEGAPIXEL = 1024 * 1024
PIXELS_PER_IMAGE_TOKEN = 1024
CHARS_PER_TEXT_TOKEN = 4

# --- rendering ---
#: quality → detail level; ``auto``/``None``/unknown → :data:`DEFAULT_LEVEL`.
QUALITY_LEVELS = {"low": 1, "standard": 2, "medium": 2, "high": 3, "hd": 3, "xhigh": 4, "max": 5}
DEFAULT_LEVEL = 2
#: Shapes drawn besides the hero, per level.
EXTRA_SHAPES = {1: 2, 2: 5, 3: 9, 4: 13, 5: 19}
#: Supersampling factor per level (capped by :data:`WORK_MAX_PIXELS`).
SUPERSAMPLE = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3}
#: Largest canvas drawn on; bigger outputs are drawn smaller and resized up.
WORK_MAX_PIXELS = 2048 * 2048
#: Fraction of each edge kept free of shapes and tiles.
INSET = 0.07
#: Levels from which shapes get outlines and the background gets grain.
OUTLINE_FROM_LEVEL = 3
GRAIN_FROM_LEVEL = 3
GRAIN_CELLS = 24
#: Blocky preview: the long edge in blocks.
PREVIEW_BLOCKS = 24
PREVIEW_BLUR_RADIUS = 3
REFERENCE_THUMB_EDGE = 192
REFERENCE_COLOR_EDGE = 32
REFERENCE_DOMINANT_COLORS = 3
MAX_REFERENCE_TILES = 4

RGB = tuple[int, int, int]

COLOR_WORDS: dict[str, RGB] = {
    "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (245, 215, 40),
    "green": (50, 170, 70), "blue": (40, 90, 220), "purple": (130, 60, 180),
    "violet": (140, 70, 220), "pink": (240, 120, 170), "black": (20, 20, 22),
    "white": (245, 245, 245), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "brown": (130, 80, 40), "cyan": (30, 200, 220), "magenta": (210, 40, 180),
    "gold": (212, 175, 55), "golden": (212, 175, 55), "silver": (192, 192, 196),
    "navy": (20, 35, 100), "teal": (0, 128, 128), "turquoise": (64, 224, 208),
    "indigo": (75, 0, 130), "maroon": (128, 0, 0), "olive": (128, 128, 0),
    "lime": (150, 230, 50), "beige": (225, 210, 175), "tan": (210, 180, 140),
    "crimson": (200, 20, 60), "scarlet": (255, 36, 0), "coral": (255, 127, 80),
    "lavender": (180, 160, 230), "amber": (255, 191, 0), "emerald": (40, 160, 100),
}  # fmt: skip
_SHAPE_BASE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "round", "ball", "sun", "moon", "orb", "bubble", "planet", "disc", "disk"),
    "ring": ("ring", "donut", "doughnut", "halo", "loop"),
    "square": ("square", "box", "cube", "rectangle", "block", "building"),
    "triangle": ("triangle", "pyramid", "mountain", "peak", "tree"),
    "star": ("star", "sparkle", "starry"),
    "stripes": ("stripe", "striped", "line", "lines", "wave", "flag"),
    "grid": ("grid", "checker", "checkerboard", "checkered", "tile", "mosaic", "window"),
    "hexagon": ("hexagon", "honeycomb", "hex"),
    "diamond": ("diamond", "rhombus", "gem", "crystal"),
    "dots": ("dot", "dots", "polka", "dotted", "spot", "spots", "confetti"),
}
SHAPE_WORDS: dict[str, str] = {
    form: kind
    for kind, words in _SHAPE_BASE_WORDS.items()
    for word in words
    for form in (word, word + "s", word + "es")
}
SHAPE_KINDS = tuple(_SHAPE_BASE_WORDS)
#: Kinds that fill a rectangular panel rather than sit around a centre point.
PANEL_KINDS = frozenset({"stripes", "grid", "dots"})
BACKGROUND_NOUNS = frozenset({"background", "backdrop", "sky", "wall", "sea", "ocean", "field"})
BACKGROUND_PREPOSITIONS = frozenset({"on", "over", "against"})
ARTICLES = frozenset({"a", "an", "the", "some"})


# --- scene ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ellipse:
    cx: float
    cy: float
    rx: float
    ry: float
    fill: RGB
    outline: RGB | None = None
    outline_width: float = 0.0


@dataclass(frozen=True, slots=True)
class Ring:
    cx: float
    cy: float
    r: float
    width: float
    color: RGB


@dataclass(frozen=True, slots=True)
class Polygon:
    points: tuple[tuple[float, float], ...]
    fill: RGB
    outline: RGB | None = None
    outline_width: float = 0.0


Shape = Ellipse | Ring | Polygon


@dataclass(frozen=True, slots=True)
class Glow:
    cx: float
    cy: float
    r: float
    color: RGB
    strength: float  # 0..1 at the centre


@dataclass(frozen=True, slots=True)
class Tile:
    """A reference thumbnail pasted into the picture, inside a frame."""

    x: float
    y: float
    size: float
    frame: float
    frame_color: RGB
    image: PILImage.Image | None
    color: RGB  # shown instead of the image when there is none (an SVG reference)


@dataclass(frozen=True, slots=True)
class Scene:
    width: int
    height: int
    title: str
    #: ``(start colour, end colour, angle in degrees)``; ``None`` = transparent.
    background: tuple[RGB, RGB, float] | None
    glow: Glow | None
    grain: tuple[int, RGB, float] | None  # (seed, colour, strength)
    shapes: tuple[Shape, ...]
    tiles: tuple[Tile, ...]


@dataclass(frozen=True, slots=True)
class ReferenceLook:
    """What the sandbox takes from one reference image."""

    digest: bytes
    colors: tuple[RGB, ...]  # the mean colour first, then dominant colours
    thumbnail: PILImage.Image | None


@dataclass(frozen=True, slots=True)
class Palette:
    bg_start: RGB
    bg_end: RGB
    hero: RGB
    others: tuple[RGB, ...]
    glow: RGB
    outline: RGB
    frame: RGB


@dataclass(frozen=True, slots=True)
class _Spec:
    """Everything one image depends on besides its index."""

    prompt: str
    width: int
    height: int
    level: int
    transparent: bool
    fmt: str
    compression: int | None
    stream: bool
    seed: int
    references: tuple[ReferenceLook, ...]


@dataclass(frozen=True, slots=True)
class _Rendered:
    previews: tuple[bytes | str, ...]  # raster previews, or SVG markup pieces
    final: bytes


# --- small helpers ----------------------------------------------------------------------------


def _derive(*parts: object) -> int:
    """A stable 64-bit integer from any reprs (never Python's salted ``hash``)."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return int.from_bytes(h.digest()[:8], "big")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _hls(hue: float, lightness: float, saturation: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(hue % 1.0, lightness, saturation)
    return round(r * 255), round(g * 255), round(b * 255)


def _shade(color: RGB, delta: float) -> RGB:
    """The colour with HLS lightness moved by ``delta`` (clamped to stay a colour)."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*(c / 255 for c in color))
    return _hls(hue, min(0.93, max(0.07, lightness + delta)), saturation)


def _lightness(color: RGB) -> float:
    return colorsys.rgb_to_hls(*(c / 255 for c in color))[1]


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())


def _level(quality: str | None) -> int:
    return QUALITY_LEVELS.get((quality or "").lower(), DEFAULT_LEVEL)


def _fmt(v: float) -> str:
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _hex(color: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# --- references -------------------------------------------------------------------------------


def _analyse_reference(ref: ReferenceImage, position: int) -> ReferenceLook:
    digest = hashlib.sha256(ref.data).digest()
    fmt = imaging.sniff_format(ref.data)
    if fmt == "svg":  # not rasterized: a colour derived from the markup stands in for it
        return ReferenceLook(digest, (_hls(digest[0] / 255, 0.5, 0.6),), None)
    if fmt is None:
        raise errors.InvalidImage(f"sandbox: reference image {position} is not a known format")
    try:
        imaging.probe(ref.data)  # pixel limit before any decoding
        with PILImage.open(io.BytesIO(ref.data)) as opened:
            opened.draft("RGB", (REFERENCE_THUMB_EDGE, REFERENCE_THUMB_EDGE))  # JPEG DCT scaling
            opened.thumbnail((REFERENCE_THUMB_EDGE, REFERENCE_THUMB_EDGE))  # reduce() + resample
            thumb = imaging.flatten(ImageOps.exif_transpose(opened)).convert("RGB")
    except (ValueError, OSError, SyntaxError) as exc:
        raise errors.InvalidImage(f"sandbox: reference image {position} cannot be decoded") from exc
    small = thumb.copy()
    small.thumbnail((REFERENCE_COLOR_EDGE, REFERENCE_COLOR_EDGE))
    mean = tuple(round(c) for c in ImageStat.Stat(small).mean[:3])
    quantized = small.quantize(colors=REFERENCE_DOMINANT_COLORS, method=PILImage.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    counts = sorted(quantized.getcolors() or [], key=lambda item: (-item[0], item[1]))
    dominant = [tuple(palette[3 * i : 3 * i + 3]) for _, i in counts]
    colors: list[RGB] = [mean]  # type: ignore[list-item]
    colors += [c for c in dominant if c not in colors]  # type: ignore[misc]
    return ReferenceLook(digest, tuple(colors), thumb)


def _analyse_references(refs: Sequence[ReferenceImage]) -> tuple[ReferenceLook, ...]:
    return tuple(_analyse_reference(ref, i) for i, ref in enumerate(refs))


# --- palette and composition ------------------------------------------------------------------


def _named_colors(words: list[str]) -> tuple[list[RGB], RGB | None]:
    """Colour words in order (deduplicated) and the one that names the background, if any."""
    named: list[RGB] = []
    background: RGB | None = None
    for i, word in enumerate(words):
        color = COLOR_WORDS.get(word)
        if color is None:
            continue
        if color not in named:
            named.append(color)
        after = words[i + 1] if i + 1 < len(words) else ""
        j = i - 1
        while j >= 0 and words[j] in ARTICLES:
            j -= 1
        before = words[j] if j >= 0 else ""
        if background is None and (after in BACKGROUND_NOUNS or before in BACKGROUND_PREPOSITIONS):
            background = color
    return named, background


def make_palette(prompt: str, references: Sequence[ReferenceLook] = ()) -> Palette:
    """Colours from the prompt's colour words, else the references' colours, else its hash."""
    words = _words(prompt)
    named, named_bg = _named_colors(words)
    rng = random.Random(_derive("palette", prompt))
    ref_colors = [c for look in references for c in look.colors]
    if named:
        base = named_bg or named[0]
        accents = [c for c in named if c != base]
    elif references:
        base = references[0].colors[0]
        accents = [look.colors[0] for look in references[1:]]
    else:
        hue = rng.random()
        sat = rng.uniform(0.5, 0.85)
        scheme = rng.choice(((0.0, 0.08, -0.08), (0.0, 0.5, 0.42), (0.0, 1 / 3, 2 / 3)))
        base = _hls(hue, rng.uniform(0.35, 0.55), sat)
        accents = [_hls(hue + d, rng.uniform(0.45, 0.65), sat) for d in scheme[1:]]
    light = _lightness(base)
    if accents:  # the background in shades of the base, the hero in the first accent
        bg_start, bg_end = _shade(base, -0.14), _shade(base, 0.08)
        hero = accents[0]
        away = 1 if light < 0.6 else -1
    else:  # one colour: the hero in it, the background a darker (or lighter) shade of it
        away = -1 if light >= 0.35 else 1
        bg_start, bg_end = _shade(base, away * 0.30), _shade(base, away * 0.16)
        hero = base
        away = -away
    shades = [_shade(base, away * d) for d in (0.12, 0.34, 0.22)]
    others = tuple(dict.fromkeys([*accents[1:], *ref_colors, *shades, hero]))
    return Palette(
        bg_start=bg_start,
        bg_end=bg_end,
        hero=hero,
        others=others,
        glow=_shade(base, 0.3),
        outline=_shade(base, -0.35),
        frame=_shade(base, 0.4 if light < 0.6 else -0.4),
    )


def _shape_kinds(prompt: str) -> list[str]:
    kinds = list(dict.fromkeys(SHAPE_WORDS[w] for w in _words(prompt) if w in SHAPE_WORDS))
    if kinds:
        return kinds
    rng = random.Random(_derive("kinds", prompt))
    centred = [k for k in SHAPE_KINDS if k not in PANEL_KINDS]
    first = rng.choice(centred)
    return [first, rng.choice([k for k in SHAPE_KINDS if k != first])]


def _regular(cx: float, cy: float, r: float, k: int, rotation: float, stretch: float = 1.0):
    return tuple(
        (
            cx + r * math.cos(rotation + 2 * math.pi * i / k),
            cy + stretch * r * math.sin(rotation + 2 * math.pi * i / k),
        )
        for i in range(k)
    )


def _star(cx: float, cy: float, r: float, points: int, rotation: float):
    inner = r * 0.45
    return tuple(
        (
            cx + (r if i % 2 == 0 else inner) * math.cos(rotation + math.pi * i / points),
            cy + (r if i % 2 == 0 else inner) * math.sin(rotation + math.pi * i / points),
        )
        for i in range(2 * points)
    )


def _panel_shapes(
    kind: str, box: tuple[float, float, float, float], colors: Sequence[RGB], level: int,
    rng: random.Random,
) -> list[Shape]:  # fmt: skip
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    shapes: list[Shape] = []
    if kind == "stripes":
        count = 3 + level * 2
        slope = math.tan(math.radians(rng.uniform(-30, 30)))
        shift = max(-0.5 * h, min(0.5 * h, w * slope))
        top, bottom = y0 + max(0.0, -shift), y1 - max(0.0, shift)
        band = (bottom - top) / (2 * count - 1)
        for i in range(count):
            y = top + 2 * i * band
            pts = ((x0, y), (x1, y + shift), (x1, y + shift + band), (x0, y + band))
            shapes.append(Polygon(pts, colors[i % len(colors)]))
    elif kind == "grid":
        cells = 2 + level
        gap = 0.12
        cw, ch = w / cells, h / cells
        for r in range(cells):
            for c in range(cells):
                if rng.random() < 0.15:
                    continue
                cx0, cy0 = x0 + c * cw + gap * cw / 2, y0 + r * ch + gap * ch / 2
                cx1, cy1 = cx0 + cw * (1 - gap), cy0 + ch * (1 - gap)
                color = colors[(r + c) % len(colors)]
                shapes.append(Polygon(((cx0, cy0), (cx1, cy0), (cx1, cy1), (cx0, cy1)), color))
    else:  # dots
        cells = 3 + level
        cw, ch = w / cells, h / cells
        rad = 0.32 * min(cw, ch)
        for r in range(cells):
            for c in range(cells):
                color = colors[(r * cells + c) % len(colors)]
                shapes.append(Ellipse(x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch, rad, rad, color))
    return shapes


def _centred_shape(
    kind: str, cx: float, cy: float, r: float, color: RGB, outline: RGB | None,
    outline_width: float, rng: random.Random, level: int,
) -> Shape:  # fmt: skip
    rot = rng.uniform(-0.35, 0.35)
    if kind == "circle":
        return Ellipse(cx, cy, r, r, color, outline, outline_width)
    if kind == "ring":
        return Ring(cx, cy, r * 0.85, r * 0.3, color)
    if kind == "square":
        return Polygon(_regular(cx, cy, r, 4, rot + math.pi / 4), color, outline, outline_width)
    if kind == "triangle":
        return Polygon(_regular(cx, cy, r, 3, rot - math.pi / 2), color, outline, outline_width)
    if kind == "star":
        pts = _star(cx, cy, r, 5 + (level >= 4), rot - math.pi / 2)
        return Polygon(pts, color, outline, outline_width)
    if kind == "hexagon":
        return Polygon(_regular(cx, cy, r, 6, rot), color, outline, outline_width)
    # diamond
    return Polygon(_regular(cx, cy, r * 0.8, 4, -math.pi / 2, 1.3), color, outline, outline_width)


def build_scene(
    prompt: str, width: int, height: int, *, seed: int, index: int = 0, level: int = DEFAULT_LEVEL,
    transparent: bool = False, references: Sequence[ReferenceLook] = (),
) -> Scene:  # fmt: skip
    """The scene of image ``index``: a pure function of its arguments."""
    palette = make_palette(prompt, references)
    kinds = _shape_kinds(prompt)
    layout = random.Random(_derive("layout", prompt))
    rng = random.Random(
        _derive("image", seed, prompt, index, *(look.digest for look in references))
    )
    short = min(width, height)
    mx, my = INSET * width, INSET * height
    outline_width = short * 0.006 if level >= OUTLINE_FROM_LEVEL else 0.0
    outline = palette.outline if outline_width else None

    angle = (layout.uniform(0, 360) + rng.uniform(-25, 25)) % 360
    background = None if transparent else (palette.bg_start, palette.bg_end, angle)
    glow = None
    grain = None
    if not transparent:
        glow = Glow(
            rng.uniform(0.2, 0.8) * width, rng.uniform(0.15, 0.6) * height,
            short * rng.uniform(0.35, 0.6), palette.glow, 0.35 if level > 1 else 0.2,
        )  # fmt: skip
        if level >= GRAIN_FROM_LEVEL:
            grain = (rng.getrandbits(63), palette.glow, 0.06 + 0.02 * (level - GRAIN_FROM_LEVEL))

    colors = [palette.hero, *palette.others]

    def place(extent: float) -> tuple[float, float, float]:
        """A centre keeping ``extent`` (radius) inside the margin; shrinks to fit."""
        extent = min(extent, (width - 2 * mx) / 2, (height - 2 * my) / 2)
        return rng.uniform(mx + extent, width - mx - extent), rng.uniform(
            my + extent, height - my - extent
        ), extent

    shapes: list[Shape] = []
    hero = kinds[0]
    if hero in PANEL_KINDS:
        frac = rng.uniform(0.6, 0.85)
        pw, ph = (width - 2 * mx) * frac, (height - 2 * my) * frac
        px = mx + rng.uniform(0, width - 2 * mx - pw)
        py = my + rng.uniform(0, height - 2 * my - ph)
        shapes += _panel_shapes(hero, (px, py, px + pw, py + ph), colors[:2], level, rng)
    else:
        r = short * rng.uniform(0.2, 0.3)
        cx = width / 2 + rng.uniform(-0.1, 0.1) * width
        cy = height / 2 + rng.uniform(-0.1, 0.1) * height
        ext = r * 1.05
        cx = min(max(cx, mx + ext), width - mx - ext) if width - 2 * mx > 2 * ext else width / 2
        cy = min(max(cy, my + ext), height - my - ext) if height - 2 * my > 2 * ext else height / 2
        shapes.append(
            _centred_shape(hero, cx, cy, r, palette.hero, outline, outline_width, rng, level)
        )

    for i in range(EXTRA_SHAPES[level]):
        kind = kinds[(i + 1) % len(kinds)] if rng.random() < 0.8 else rng.choice(kinds)
        color = colors[1 + i % (len(colors) - 1)] if len(colors) > 1 else colors[0]
        if kind in PANEL_KINDS:
            cx, cy, ext = place(short * rng.uniform(0.07, 0.14))
            box = (cx - ext, cy - ext, cx + ext, cy + ext)
            shapes += _panel_shapes(kind, box, [color, colors[0]], 1, rng)
        else:
            cx, cy, ext = place(short * rng.uniform(0.03, 0.11) * 1.05)
            shapes.append(
                _centred_shape(kind, cx, cy, ext / 1.05, color, outline, outline_width, rng, level)
            )

    tiles: list[Tile] = []
    shown = references[:MAX_REFERENCE_TILES]
    if shown:
        size = short * (0.2 if len(shown) <= 2 else 0.15)
        gap = short * 0.02
        frame = max(1.0, size * 0.04)
        for k, look in enumerate(shown):
            x = width - mx - (k + 1) * size - k * gap
            y = height - my - size
            tiles.append(Tile(x, y, size, frame, palette.frame, look.thumbnail, look.colors[0]))

    return Scene(
        width, height, prompt, background, glow, grain, tuple(shapes), tuple(tiles)
    )


# --- raster rendering -------------------------------------------------------------------------


def _gradient(size: tuple[int, int], start: RGB, end: RGB, angle: float) -> PILImage.Image:
    """A linear gradient at ``angle`` degrees, computed small and resized (it is smooth)."""
    w, h = size
    k = 256 / max(w, h)
    gw, gh = max(1, round(w * k)), max(1, round(h * k))
    diag = math.ceil(math.hypot(gw, gh)) + 2
    ramp = PILImage.linear_gradient("L").resize((diag, diag), PILImage.Resampling.BILINEAR)
    ramp = ramp.rotate(angle, resample=PILImage.Resampling.BILINEAR)
    left, top = (diag - gw) // 2, (diag - gh) // 2
    mask = ramp.crop((left, top, left + gw, top + gh)).resize(size, PILImage.Resampling.BICUBIC)
    start_image, end_image = PILImage.new("RGB", size, start), PILImage.new("RGB", size, end)
    return PILImage.composite(end_image, start_image, mask)


def _paint_glow(canvas: PILImage.Image, glow: Glow, sx: float, sy: float) -> None:
    d = max(2, round(2 * glow.r * min(sx, sy)))
    mask = PILImage.radial_gradient("L").resize((d, d), PILImage.Resampling.BILINEAR)
    # radial_gradient is 0 at the centre and 181 (128·√2) at the middle of each edge
    lut = [round((1 - min(1.0, v / 181)) ** 2 * 255 * glow.strength) for v in range(256)]
    mask = mask.point(lut)
    x, y = round(glow.cx * sx - d / 2), round(glow.cy * sy - d / 2)
    canvas.paste(glow.color, (x, y, x + d, y + d), mask)


def _paint_grain(canvas: PILImage.Image, grain: tuple[int, RGB, float]) -> None:
    seed, color, strength = grain
    noise_rng = random.Random(seed)
    noise = PILImage.frombytes(
        "L", (GRAIN_CELLS, GRAIN_CELLS), noise_rng.randbytes(GRAIN_CELLS * GRAIN_CELLS)
    )
    mask = noise.resize(canvas.size, PILImage.Resampling.BICUBIC)
    mask = mask.point([round(v * strength) for v in range(256)])
    canvas.paste(color, (0, 0, *canvas.size), mask)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, sx: float, sy: float) -> None:
    if isinstance(shape, Ellipse):
        box = [
            (shape.cx - shape.rx) * sx, (shape.cy - shape.ry) * sy,
            (shape.cx + shape.rx) * sx, (shape.cy + shape.ry) * sy,
        ]  # fmt: skip
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            return
        if shape.outline is None:
            draw.ellipse(box, fill=shape.fill)
        else:
            width = max(1, round(shape.outline_width * sx))
            draw.ellipse(box, fill=shape.fill, outline=shape.outline, width=width)
    elif isinstance(shape, Ring):
        outer = shape.r + shape.width / 2
        box = [
            (shape.cx - outer) * sx, (shape.cy - outer) * sy,
            (shape.cx + outer) * sx, (shape.cy + outer) * sy,
        ]  # fmt: skip
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            return
        draw.ellipse(box, outline=shape.color, width=max(1, round(shape.width * sx)))
    else:
        pts = [(x * sx, y * sy) for x, y in shape.points]
        if shape.outline is None:
            draw.polygon(pts, fill=shape.fill)
        else:
            width = max(1, round(shape.outline_width * sx))
            draw.polygon(pts, fill=shape.fill, outline=shape.outline, width=width)


def render_raster(scene: Scene, level: int = DEFAULT_LEVEL) -> PILImage.Image:
    """The scene as an ``RGB`` image (``RGBA`` when the background is transparent)."""
    w, h = scene.width, scene.height
    scale = min(float(SUPERSAMPLE[level]), math.sqrt(WORK_MAX_PIXELS / (w * h)))
    ww, wh = max(1, round(w * scale)), max(1, round(h * scale))
    sx, sy = ww / w, wh / h
    if scene.background is not None:
        start, end, angle = scene.background
        canvas = _gradient((ww, wh), start, end, angle)
        if scene.glow is not None:
            _paint_glow(canvas, scene.glow, sx, sy)
        if scene.grain is not None:
            _paint_grain(canvas, scene.grain)
    else:
        canvas = PILImage.new("RGBA", (ww, wh), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for shape in scene.shapes:
        _draw_shape(draw, shape, sx, sy)
    if (ww, wh) != (w, h):
        factor = round(scale)
        if factor > 1 and (ww, wh) == (w * factor, h * factor):
            canvas = canvas.reduce(factor)  # box filter: exact supersampling
        else:
            resample = PILImage.Resampling.LANCZOS if scale > 1 else PILImage.Resampling.BICUBIC
            canvas = canvas.resize((w, h), resample)
    if scene.tiles:
        draw = ImageDraw.Draw(canvas)
        for tile in scene.tiles:
            x0, y0 = round(tile.x), round(tile.y)
            size = max(1, round(tile.size))
            draw.rectangle((x0, y0, x0 + size - 1, y0 + size - 1), fill=tile.frame_color)
            inner = max(1, size - 2 * round(tile.frame))
            offset = (size - inner) // 2
            if tile.image is not None:
                thumb = ImageOps.fit(tile.image, (inner, inner), PILImage.Resampling.BICUBIC)
                canvas.paste(thumb, (x0 + offset, y0 + offset))
            else:
                left, top = x0 + offset, y0 + offset
                canvas.paste(tile.color, (left, top, left + inner, top + inner))
    return canvas


def _blocky(image: PILImage.Image) -> PILImage.Image:
    w, h = image.size
    k = PREVIEW_BLOCKS / max(w, h)
    small = image.resize((max(1, round(w * k)), max(1, round(h * k))), PILImage.Resampling.BOX)
    return small.resize((w, h), PILImage.Resampling.NEAREST)


def _blurred(image: PILImage.Image) -> PILImage.Image:
    w, h = image.size
    factor = max(1, min(w, h) // 64)
    work = image.convert("RGBa") if image.mode == "RGBA" else image
    small = work.reduce(factor) if factor > 1 else work
    small = small.filter(ImageFilter.GaussianBlur(PREVIEW_BLUR_RADIUS))
    out = small.resize((w, h), PILImage.Resampling.BILINEAR)
    return out.convert("RGBA") if image.mode == "RGBA" else out


# --- SVG rendering ----------------------------------------------------------------------------


def render_svg(scene: Scene) -> list[str]:
    """The scene as SVG markup, in pieces that concatenate to the document."""
    w, h = scene.width, scene.height
    title = escape(_XML_INVALID.sub("", scene.title))
    pieces = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">\n<title>{title}</title>\n'
    ]
    if scene.background is not None:
        start, end, angle = scene.background
        half = math.hypot(w, h) / 2
        dx, dy = math.sin(math.radians(angle)) * half, math.cos(math.radians(angle)) * half
        defs = [
            '<defs>\n<linearGradient id="bg" gradientUnits="userSpaceOnUse" '
            f'x1="{_fmt(w / 2 - dx)}" y1="{_fmt(h / 2 - dy)}" '
            f'x2="{_fmt(w / 2 + dx)}" y2="{_fmt(h / 2 + dy)}">'
            f'<stop offset="0" stop-color="{_hex(start)}"/>'
            f'<stop offset="1" stop-color="{_hex(end)}"/></linearGradient>\n'
        ]
        if scene.glow is not None:
            g = scene.glow
            defs.append(
                '<radialGradient id="glow">'
                f'<stop offset="0" stop-color="{_hex(g.color)}" stop-opacity="{_fmt(g.strength)}"/>'
                f'<stop offset="1" stop-color="{_hex(g.color)}" stop-opacity="0"/>'
                "</radialGradient>\n"
            )
        defs.append("</defs>\n")
        pieces.append("".join(defs))
        body = f'<rect width="{w}" height="{h}" fill="url(#bg)"/>\n'
        if scene.glow is not None:
            g = scene.glow
            body += (
                f'<circle cx="{_fmt(g.cx)}" cy="{_fmt(g.cy)}" r="{_fmt(g.r)}" fill="url(#glow)"/>\n'
            )
        pieces.append(body)

    def stroke(outline: RGB | None, width: float) -> str:
        if outline is None or width <= 0:
            return ""
        return f' stroke="{_hex(outline)}" stroke-width="{_fmt(width)}" stroke-linejoin="round"'

    group: list[str] = []
    for i, shape in enumerate(scene.shapes):
        if isinstance(shape, Ellipse):
            group.append(
                f'<ellipse cx="{_fmt(shape.cx)}" cy="{_fmt(shape.cy)}" rx="{_fmt(shape.rx)}" '
                f'ry="{_fmt(shape.ry)}" fill="{_hex(shape.fill)}"'
                f"{stroke(shape.outline, shape.outline_width)}/>\n"
            )
        elif isinstance(shape, Ring):
            group.append(
                f'<circle cx="{_fmt(shape.cx)}" cy="{_fmt(shape.cy)}" r="{_fmt(shape.r)}" '
                f'fill="none" stroke="{_hex(shape.color)}" stroke-width="{_fmt(shape.width)}"/>\n'
            )
        else:
            pts = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in shape.points)
            group.append(
                f'<polygon points="{pts}" fill="{_hex(shape.fill)}"'
                f"{stroke(shape.outline, shape.outline_width)}/>\n"
            )
        if len(group) == 4 or i == len(scene.shapes) - 1:
            pieces.append("".join(group))
            group = []

    for tile in scene.tiles:
        inner = tile.size - 2 * tile.frame
        markup = (
            f'<rect x="{_fmt(tile.x)}" y="{_fmt(tile.y)}" width="{_fmt(tile.size)}" '
            f'height="{_fmt(tile.size)}" fill="{_hex(tile.frame_color)}"/>\n'
        )
        ix, iy = _fmt(tile.x + tile.frame), _fmt(tile.y + tile.frame)
        if tile.image is not None:
            thumb = ImageOps.fit(tile.image, (96, 96), PILImage.Resampling.BICUBIC)
            data = pybase64.b64encode(imaging.encode(thumb, "png")).decode("ascii")
            markup += (
                f'<image x="{ix}" y="{iy}" width="{_fmt(inner)}" height="{_fmt(inner)}" '
                'preserveAspectRatio="xMidYMid slice" '
                f'xlink:href="data:image/png;base64,{data}"/>\n'
            )
        else:
            markup += (
                f'<rect x="{ix}" y="{iy}" width="{_fmt(inner)}" height="{_fmt(inner)}" '
                f'fill="{_hex(tile.color)}"/>\n'
            )
        pieces.append(markup)
    pieces.append("</svg>\n")
    return pieces


# --- one image, in a worker thread ------------------------------------------------------------


def _produce(spec: _Spec, index: int) -> _Rendered:
    scene = build_scene(
        spec.prompt, spec.width, spec.height, seed=spec.seed, index=index, level=spec.level,
        transparent=spec.transparent, references=spec.references,
    )  # fmt: skip
    if spec.fmt == "svg":
        pieces = render_svg(scene)
        return _Rendered(tuple(pieces) if spec.stream else (), "".join(pieces).encode("utf-8"))
    image = render_raster(scene, spec.level)
    previews: tuple[bytes | str, ...] = ()
    if spec.stream:
        previews = tuple(
            imaging.encode(preview, spec.fmt, spec.compression)
            for preview in (_blocky(image), _blurred(image))
        )
    return _Rendered(previews, imaging.encode(image, spec.fmt, spec.compression))


# --- the provider -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    latency_ms: int = 0
    fail: str | None = None
    fail_rate: float = 0.0


def _option_error(name: str, expected: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"option '{name}' must be {expected}", metadata={"option": name}
    )


def parse_options(options: Mapping[str, Any]) -> _Options:
    """Validate the sandbox's passthrough options; unknown keys are ignored."""
    latency = options.get("latency_ms")
    if latency is None:
        latency = 0
    elif (
        isinstance(latency, bool)
        or not isinstance(latency, int)
        or not 0 <= latency <= MAX_LATENCY_MS
    ):
        raise _option_error("latency_ms", f"an integer from 0 to {MAX_LATENCY_MS} (milliseconds)")
    fail = options.get("fail")
    if fail is not None and (not isinstance(fail, str) or fail not in FAIL_MODES):
        raise _option_error("fail", "one of " + ", ".join(FAIL_MODES))
    rate = options.get("fail_rate")
    if rate is None:
        rate = 0.0
    elif (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or not 0 <= rate <= 1
    ):
        raise _option_error("fail_rate", "a number from 0 to 1")
    return _Options(latency, fail, float(rate))


def injected_error(mode: str) -> errors.UpstreamError:
    """The error a ``fail`` mode raises."""
    if mode == "overloaded":
        return errors.UpstreamOverloaded("sandbox: injected overload")
    if mode == "timeout":
        return errors.UpstreamTimeout("sandbox: injected upstream timeout")
    if mode == "rate_limit":
        return errors.UpstreamRateLimited(
            "sandbox: injected rate limit", headers={"Retry-After": RATE_LIMIT_RETRY_AFTER_S}
        )
    if mode == "content_policy":
        return errors.ContentRefused("sandbox: injected content policy refusal")
    if mode == "bad_key":
        return errors.UpstreamError(
            "sandbox: the provider rejected the operator's API key",
            metadata={"provider_key_rejected": True},
        )
    if mode == "after_first_image":
        return errors.UpstreamError("sandbox: injected upstream failure after the first image")
    return errors.UpstreamError("sandbox: injected upstream failure")


def compute_usage(job: ProviderJob) -> Usage:
    w, h, n = job.size.width, job.size.height, job.n
    ref_pixels = [ref.width * ref.height for ref in job.references]
    return Usage(
        output_images=n,
        output_megapixels=Decimal(w * h * n) / Decimal(PIXELS_PER_MEGAPIXEL),
        output_image_tokens=n * _ceil_div(w * h, PIXELS_PER_IMAGE_TOKEN),
        input_images=len(job.references),
        input_megapixels=Decimal(sum(ref_pixels)) / Decimal(PIXELS_PER_MEGAPIXEL),
        input_image_tokens=sum(_ceil_div(p, PIXELS_PER_IMAGE_TOKEN) for p in ref_pixels),
        input_text_tokens=max(1, _ceil_div(len(job.prompt), CHARS_PER_TEXT_TOKEN)),
        requests=1,
    )


class SandboxProvider:
    """The ``imagegate`` provider: deterministic offline pictures, see the module docstring."""

    slug = SLUG
    name = NAME

    #: Needs no configuration: always available.
    env: dict[str, str] = {}

    def __init__(self, *, failure_rng: random.Random | None = None) -> None:
        #: Decides ``fail_rate`` failures; seeded from OS entropy, never from a job's seed.
        self._failure_rng = failure_rng or random.Random()

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: object) -> SandboxProvider:
        return cls()

    def _check(self, job: ProviderJob) -> str:
        fmt = (job.output_format or "png").lower()
        fmt = "jpeg" if fmt == "jpg" else fmt
        if fmt not in OUTPUT_FORMATS:
            raise errors.InvalidRequest(
                f"sandbox: output_format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}"
            )
        if job.n < 1:
            raise errors.InvalidRequest("sandbox: n must be at least 1")
        w, h = job.size.width, job.size.height
        if w < 1 or h < 1 or w * h > imaging.MAX_PIXELS:
            raise errors.InvalidRequest(f"sandbox: cannot draw {w}x{h} pixels")
        return fmt

    async def _wait(self, latency_ms: int, deadline: float | None) -> AsyncIterator[Progress]:
        total = latency_ms / 1000
        start = time.monotonic()
        next_progress = start
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= total:
                return
            if deadline is not None and now >= deadline:
                raise errors.UpstreamTimeout("sandbox: the deadline passed during latency_ms")
            if now >= next_progress:
                yield Progress(round(elapsed / total, 3))
                next_progress += PROGRESS_INTERVAL_S
            step = min(SLEEP_STEP_S, total - elapsed, next_progress - now)
            if deadline is not None:
                step = min(step, max(0.0, deadline - now))
            await asyncio.sleep(max(0.0, step))

    async def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        options = parse_options({**job.settings.get("options", {}), **job.options})
        fmt = self._check(job)
        if options.latency_ms:
            async for progress in self._wait(options.latency_ms, job.deadline):
                yield progress
        if options.fail is not None and options.fail != "after_first_image":
            raise injected_error(options.fail)
        if options.fail_rate and self._failure_rng.random() < options.fail_rate:
            raise errors.UpstreamError("sandbox: injected upstream failure (fail_rate)")

        references: tuple[ReferenceLook, ...] = ()
        if job.references:
            references = await imaging.offload(_analyse_references, job.references)
        spec = _Spec(
            prompt=job.prompt,
            width=job.size.width,
            height=job.size.height,
            level=_level(job.quality),
            transparent=job.background == "transparent",
            fmt=fmt,
            compression=job.output_compression,
            stream=job.stream,
            seed=job.seed if job.seed is not None else secrets.randbits(63),
            references=references,
        )
        media_type = MEDIA_TYPES[fmt]
        count = 1 if options.fail == "after_first_image" else job.n
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(imaging.EXECUTOR, functools.partial(_produce, spec, i))
            for i in range(count)
        ]
        try:
            for index, future in enumerate(futures):
                rendered = await future
                for preview in rendered.previews:
                    if isinstance(preview, str):
                        yield TextChunk(preview, phase="draft")
                    else:
                        yield Partial(index, Blob.from_raw(preview), media_type)
                yield Image(Blob.from_raw(rendered.final), media_type, spec.width, spec.height)
                if options.fail == "after_first_image":
                    raise injected_error("after_first_image")
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: never "exception was never retrieved"
        yield Done(compute_usage(job))

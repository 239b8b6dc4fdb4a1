"""The sandbox's scene model and composition: what one image shows, as a pure function of
the prompt, the seed, the image index, the detail level and the references (analysed here too).
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageOps, ImageStat

from imagegate import errors, imaging
from imagegate.providers.base import ReferenceImage

#: Detail level (1 to 5) when the quality names none.
DEFAULT_LEVEL = 2
#: Shapes drawn besides the hero, per level.
EXTRA_SHAPES = {1: 2, 2: 5, 3: 9, 4: 13, 5: 19}
#: Fraction of each edge kept free of shapes and tiles.
INSET = 0.07
#: Levels from which shapes get outlines and the background gets grain.
OUTLINE_FROM_LEVEL = 3
GRAIN_FROM_LEVEL = 3
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


# --- small helpers ----------------------------------------------------------------------------


def _derive(*parts: object) -> int:
    """A stable 64-bit integer from any reprs (never Python's salted ``hash``)."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return int.from_bytes(h.digest()[:8], "big")


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


def analyse_references(refs: Sequence[ReferenceImage]) -> tuple[ReferenceLook, ...]:
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

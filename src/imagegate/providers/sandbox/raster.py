"""Pillow rendering of a sandbox scene, and the previews streamed before the final image."""

from __future__ import annotations

import math
import random

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageOps

from imagegate.providers.sandbox.scene import (
    DEFAULT_LEVEL,
    RGB,
    Ellipse,
    Glow,
    Ring,
    Scene,
    Shape,
)

#: Supersampling factor per level (capped by :data:`WORK_MAX_PIXELS`).
SUPERSAMPLE = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3}
#: Largest canvas drawn on; bigger outputs are drawn smaller and resized up.
WORK_MAX_PIXELS = 2048 * 2048
GRAIN_CELLS = 24
#: Blocky preview: the long edge in blocks.
PREVIEW_BLOCKS = 24
PREVIEW_BLUR_RADIUS = 3


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


def blocky(image: PILImage.Image) -> PILImage.Image:
    w, h = image.size
    k = PREVIEW_BLOCKS / max(w, h)
    small = image.resize((max(1, round(w * k)), max(1, round(h * k))), PILImage.Resampling.BOX)
    return small.resize((w, h), PILImage.Resampling.NEAREST)


def blurred(image: PILImage.Image) -> PILImage.Image:
    w, h = image.size
    factor = max(1, min(w, h) // 64)
    work = image.convert("RGBa") if image.mode == "RGBA" else image
    small = work.reduce(factor) if factor > 1 else work
    small = small.filter(ImageFilter.GaussianBlur(PREVIEW_BLUR_RADIUS))
    out = small.resize((w, h), PILImage.Resampling.BILINEAR)
    return out.convert("RGBA") if image.mode == "RGBA" else out

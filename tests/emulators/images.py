"""Real image bytes of a requested size and format, fast and deterministic, for emulators."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


def synth(width: int, height: int, fmt: str = "png", *, seed: str | int = 0, alpha: bool = False,
          quality: int = 90) -> bytes:
    """A gradient with a disc whose colour depends on ``seed``: distinct, cheap, decodable."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    base = Image.linear_gradient("L").resize((width, height))
    colour = tuple(digest[:3])
    image = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base))
    draw = ImageDraw.Draw(image)
    r = max(1, min(width, height) // 4)
    draw.ellipse((width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r), fill=colour)
    if alpha:
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse((width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r), fill=255)
        image = image.convert("RGBA")
        image.putalpha(mask)
    out = io.BytesIO()
    pil = PIL_FORMATS[fmt.lower()]
    if pil == "JPEG":
        image.convert("RGB").save(out, pil, quality=quality)
    elif pil == "WEBP":
        image.save(out, pil, quality=quality)
    else:
        image.save(out, pil, compress_type=3)
    return out.getvalue()

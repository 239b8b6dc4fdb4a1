"""Image sniffing, probing, decoding, encoding and format conversion.

Everything here is synchronous, CPU-bound Pillow work, except :func:`transcode_async` and
:func:`offload`, which run it on :data:`EXECUTOR`, a module-level bounded thread pool, so the
event loop never blocks on pixels. Pillow releases the GIL while it decodes, resizes and
encodes, so the pool gives real parallelism.

Conventions:

* Formats are lower-case names: ``png``, ``jpeg``, ``webp``, ``gif``, ``svg`` (``jpg`` is
  accepted as an alias on input).
* ``compression`` is OpenAI's ``output_compression`` (0-100). OpenAI defaults it to 100 and
  lowers it for smaller files, so it acts as the encoder's quality: JPEG/WEBP quality is
  ``compression`` clamped to 1..100 (see :func:`quality_for_compression`); ``None`` means the
  format's default quality. PNG is lossless and ignores it.
* WEBP is lossy with ``method=4`` (libwebp's speed/size default; 6 is ~2x slower for ~2%
  smaller files).
* PNG is always written with ``compress_type=3`` (zlib ``Z_RLE``): same size as the default
  strategy on generated images and about 1.8x faster to encode.
* Images over :data:`MAX_PIXELS` are refused (``ValueError``) before any pixel is decoded.
* SVG is sniffed and probed (width/height/viewBox, best effort) but never rasterized.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from imagegate.providers.base import FORMATS_BY_MEDIA_TYPE, MEDIA_TYPES

T = TypeVar("T")

#: Refuse to decode anything larger (100 MP, about 400 MB as RGBA).
MAX_PIXELS = 100_000_000
#: zlib strategy for PNG: 3 = Z_RLE.
PNG_COMPRESS_TYPE = 3
JPEG_DEFAULT_QUALITY = 90
WEBP_DEFAULT_QUALITY = 85
WEBP_METHOD = 4
#: Background colour JPEG flattens alpha onto.
FLATTEN_COLOR = (255, 255, 255)
#: Per-channel distance (0-255) under which a pixel counts as "background colour".
TRANSPARENCY_TOLERANCE = 24
#: The connectivity search of :func:`make_background_transparent` runs on a mask at most
#: this many pixels on its long edge (Pillow's flood fill is a Python BFS).
FLOODFILL_MAX_EDGE = 320
#: How far into a document SVG sniffing looks for the root element.
SVG_SNIFF_BYTES = 64 * 1024
#: Size browsers give an SVG that states neither width/height nor viewBox.
SVG_DEFAULT_SIZE = (300, 150)

RASTER_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
#: Formats :func:`encode` writes.
ENCODABLE_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
#: Formats that can carry an alpha channel.
ALPHA_FORMATS = frozenset({"png", "webp", "gif", "svg"})
#: Formats whose size ``compression`` changes.
LOSSY_FORMATS = frozenset({"jpeg", "webp"})

_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _pool_size() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 2
    return max(2, min(cpus, 16))


#: The pool every off-loop image operation of the gateway runs on.
EXECUTOR = ThreadPoolExecutor(max_workers=_pool_size(), thread_name_prefix="imagegate-imaging")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    media_type: str
    width: int
    height: int
    has_alpha: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height


def normalize_format(fmt: str) -> str:
    """``"JPG"`` → ``"jpeg"``; also accepts a media type. ``ValueError`` for anything unknown."""
    f = fmt.strip().lower()
    if f in FORMATS_BY_MEDIA_TYPE:
        return FORMATS_BY_MEDIA_TYPE[f]
    if f == "jpg" or f == "image/jpg":
        return "jpeg"
    if f in MEDIA_TYPES:
        return f
    raise ValueError(f"unknown image format {fmt!r}")


def quality_for_compression(fmt: str, compression: int | None) -> int:
    """Encoder quality (1..100) for an ``output_compression`` (100 = least loss, OpenAI's default)."""
    if compression is None:
        return WEBP_DEFAULT_QUALITY if fmt == "webp" else JPEG_DEFAULT_QUALITY
    return max(1, min(100, int(compression)))


# --- sniffing and probing -------------------------------------------------------------------


def _svg_root_offset(data: bytes) -> int | None:
    """Offset of ``<svg`` when the document's root element is an SVG, else ``None``."""
    head = data[:SVG_SNIFF_BYTES]
    i = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    n = len(head)
    while True:
        while i < n and head[i] in b" \t\r\n\f":
            i += 1
        if head.startswith(b"<?", i):
            end = head.find(b"?>", i + 2)
            if end < 0:
                return None
            i = end + 2
        elif head.startswith(b"<!--", i):
            end = head.find(b"-->", i + 4)
            if end < 0:
                return None
            i = end + 3
        elif head[i : i + 9].upper() == b"<!DOCTYPE":
            close = head.find(b">", i)
            bracket = head.find(b"[", i)
            if 0 <= bracket < close:  # internal subset: [ ... ]>
                end = head.find(b"]", bracket)
                close = head.find(b">", end) if end >= 0 else -1
            if close < 0:
                return None
            i = close + 1
        else:
            break
    if head.startswith(b"<svg", i) and (i + 4 == n or head[i + 4] in b" \t\r\n\f/>"):
        return i
    return None


def sniff_format(data: bytes) -> str | None:
    """The format the magic bytes say, or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if _svg_root_offset(data) is not None:
        return "svg"
    return None


_SVG_TAG = re.compile(rb"""<svg((?:[^>"']|"[^"]*"|'[^']*')*)>""")
_SVG_ATTR = re.compile(rb"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_SVG_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px|pt|pc|mm|cm|in)?\s*$")
_SVG_UNITS = {
    None: 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0,
}  # fmt: skip


def _svg_length(value: str | None) -> float | None:
    if value is None:
        return None
    m = _SVG_LENGTH.match(value)
    if not m:  # %, em, auto ...: relative to something we do not know
        return None
    px = float(m.group(1)) * _SVG_UNITS[m.group(2)]
    return px if px > 0 else None


def _probe_svg(data: bytes) -> ImageInfo:
    offset = _svg_root_offset(data)
    if offset is None:
        raise ValueError("not an SVG document")
    m = _SVG_TAG.match(data, offset)
    attrs: dict[str, str] = {}
    if m:
        for am in _SVG_ATTR.finditer(m.group(1)):
            value = am.group(2) if am.group(2) is not None else am.group(3)
            attrs[am.group(1).decode("ascii", "replace")] = value.decode("utf-8", "replace")
    width = _svg_length(attrs.get("width"))
    height = _svg_length(attrs.get("height"))
    vb_w = vb_h = None
    if "viewBox" in attrs:
        parts = re.split(r"[\s,]+", attrs["viewBox"].strip())
        try:
            if len(parts) == 4 and float(parts[2]) > 0 and float(parts[3]) > 0:
                vb_w, vb_h = float(parts[2]), float(parts[3])
        except ValueError:
            pass
    if width is None and height is None:
        width, height = (vb_w, vb_h) if vb_w else SVG_DEFAULT_SIZE
    elif width is None:
        width = height * vb_w / vb_h if vb_w else height * 2  # type: ignore[operator]
    elif height is None:
        height = width * vb_h / vb_w if vb_w else width / 2  # type: ignore[operator]
    assert width is not None and height is not None
    return ImageInfo("svg", MEDIA_TYPES["svg"], max(1, round(width)), max(1, round(height)), True)


def _pil_has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"image of {width}x{height} pixels is over the limit of {MAX_PIXELS // 1_000_000} MP"
        )


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS))
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image is over the pixel limit: {exc}") from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct errors ...
        raise ValueError(f"unreadable image: {exc}") from exc
    _check_pixels(*image.size)
    return image


#: A PNG starts with its signature and then its IHDR chunk (length 13), by the spec.
PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
#: Bytes of a PNG that hold its width and height: the signature and IHDR up to both.
PNG_SIZE_BYTES = len(PNG_START) + 8


def png_size(head: bytes) -> tuple[int, int] | None:
    """A PNG's width and height, read from its first :data:`PNG_SIZE_BYTES`; ``None`` when
    ``head`` does not start a PNG. A read at a fixed place: opening the image with Pillow to
    learn the same costs ~10 µs, and ~100 µs on an event loop whose caches a multi-megabyte
    answer has just swept (measured). ``ValueError`` when over :data:`MAX_PIXELS`, as ``probe``."""
    if len(head) < PNG_SIZE_BYTES or not head.startswith(PNG_START):
        return None
    width = int.from_bytes(head[16:20])
    height = int.from_bytes(head[20:24])
    if not width or not height:
        return None  # invalid: left to Pillow to say so
    _check_pixels(width, height)
    return width, height


def probe(data: bytes) -> ImageInfo:
    """Format, size and alpha from the header only (nothing is decoded).

    ``ValueError`` when the data is no readable png/jpeg/webp/gif/svg, or when a raster image
    is over :data:`MAX_PIXELS` (so a caller may probe, then decode, with one check). For SVG,
    width/height come from the root element's attributes, falling back to the viewBox and then
    to the browser default of 300x150; ``has_alpha`` is always true for SVG.
    """
    if sniff_format(data) == "svg":
        return _probe_svg(data)
    with _open(data) as image:
        fmt = _PIL_FORMATS[image.format or ""]
        return ImageInfo(fmt, MEDIA_TYPES[fmt], image.width, image.height, _pil_has_alpha(image))


# --- decoding and encoding ------------------------------------------------------------------


def decode(data: bytes) -> Image.Image:
    """Decode a raster image fully: first frame, EXIF orientation applied, mode normalized to
    ``L``/``LA``/``RGB``/``RGBA``. ``ValueError`` when unreadable, SVG, or over the pixel limit."""
    if sniff_format(data) == "svg":
        raise ValueError("SVG images cannot be rasterized")
    with _open(data) as opened:
        try:
            opened.load()
            image = ImageOps.exif_transpose(opened)
        except Exception as exc:
            raise ValueError(f"unreadable image: {exc}") from exc
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    return image.convert("RGBA" if _pil_has_alpha(image) else "RGB")


def flatten(image: Image.Image, color: tuple[int, int, int] = FLATTEN_COLOR) -> Image.Image:
    """Composite an image with alpha onto a solid colour; images without alpha → RGB as is."""
    if not _pil_has_alpha(image):
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    background = Image.new("RGB", rgba.size, color)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def encode(image: Image.Image, fmt: str, compression: int | None = None) -> bytes:
    """Encode ``image`` as ``fmt`` (png/jpeg/webp/gif) with the conventions of this module."""
    fmt = normalize_format(fmt)
    if fmt not in ENCODABLE_FORMATS:
        raise ValueError(f"cannot encode raster images as {fmt}")
    alpha = _pil_has_alpha(image)
    out = io.BytesIO()
    if fmt == "png":
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            image = image.convert("RGBA" if alpha else "RGB")
        image.save(out, "PNG", compress_type=PNG_COMPRESS_TYPE)
    elif fmt == "jpeg":
        image = flatten(image)
        image.save(out, "JPEG", quality=quality_for_compression("jpeg", compression))
    elif fmt == "webp":
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if alpha else "RGB")
        quality = quality_for_compression("webp", compression)
        image.save(out, "WEBP", quality=quality, method=WEBP_METHOD)
    else:  # gif
        image.save(out, "GIF")
    return out.getvalue()


# --- transparency ---------------------------------------------------------------------------


def make_background_transparent(image: Image.Image, tolerance: int = TRANSPARENCY_TOLERANCE) -> Image.Image:
    """Turn the background of an image without alpha into transparency → RGBA.

    The background is the smooth region connected to the border: flat colour or a gentle
    gradient, bounded by the edges of whatever is drawn on it. Edges are found with a
    Laplacian (``FIND_EDGES``) on a copy shrunk to at most :data:`FLOODFILL_MAX_EDGE`
    pixels (Pillow's flood fill is a Python BFS), and a flood fill from the border marks the
    smooth pixels it reaches. The mask is then scaled back up bilinearly, so the cut-out
    edges are soft. Smooth regions enclosed by edges (a shape's inside) stay opaque.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    factor = max(1, -(-max(w, h) // FLOODFILL_MAX_EDGE))
    small = rgb.reduce(factor) if factor > 1 else rgb
    edges = _pad_by_replication(small).filter(ImageFilter.FIND_EDGES)
    edges = edges.crop((1, 1, small.width + 1, small.height + 1))
    r, g, b = edges.split()
    strength = ImageChops.lighter(ImageChops.lighter(r, g), b)
    smooth = strength.point([255 if v <= tolerance // 2 else 0 for v in range(256)])

    framed = Image.new("L", (small.width + 2, small.height + 2), 255)
    framed.paste(smooth, (1, 1))
    ImageDraw.floodfill(framed, (0, 0), 128)
    reached = framed.crop((1, 1, small.width + 1, small.height + 1))
    background = reached.point([255 if v == 128 else 0 for v in range(256)])
    # Shrink the background by a pixel so the bilinear ramp eats into it, not into the shapes.
    background = background.filter(ImageFilter.MinFilter(3))
    if factor > 1:
        background = background.resize((w, h), Image.Resampling.BILINEAR)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(ImageChops.invert(background))
    return rgba


def _pad_by_replication(image: Image.Image) -> Image.Image:
    """A one-pixel border copied from the edge, so edge filters see no false edge there."""
    w, h = image.size
    out = Image.new(image.mode, (w + 2, h + 2))
    out.paste(image, (1, 1))
    out.paste(image.crop((0, 0, w, 1)), (1, 0))
    out.paste(image.crop((0, h - 1, w, h)), (1, h + 1))
    out.paste(out.crop((1, 0, 2, h + 2)), (0, 0))
    out.paste(out.crop((w, 0, w + 1, h + 2)), (w + 1, 0))
    return out


# --- conversion -----------------------------------------------------------------------------


def transcode(
    data: bytes, *, to_format: str, compression: int | None = None, transparent: bool = False
) -> bytes:
    """Decode ``data`` and encode it as ``to_format``.

    ``transparent=True`` needs a png or webp target (``ValueError`` otherwise); an image that
    already has alpha keeps it, one without gets its flat background made transparent
    (:func:`make_background_transparent`). JPEG targets flatten alpha onto white.
    """
    fmt = normalize_format(to_format)
    if fmt not in ENCODABLE_FORMATS:
        raise ValueError(f"cannot convert to {fmt}")
    if transparent and fmt not in ("png", "webp"):
        raise ValueError(f"a transparent background needs png or webp, not {fmt}")
    image = decode(data)
    if transparent and not _pil_has_alpha(image):
        image = make_background_transparent(image)
    return encode(image, fmt, compression)


async def offload(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run blocking image work on :data:`EXECUTOR`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(EXECUTOR, functools.partial(fn, *args, **kwargs))


async def transcode_async(data: bytes, **kw: Any) -> bytes:
    """:func:`transcode` on :data:`EXECUTOR`."""
    return await offload(transcode, data, **kw)



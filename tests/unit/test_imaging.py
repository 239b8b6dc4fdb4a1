"""imagegate.imaging: sniffing, probing, encoding, conversion, transparency."""

from __future__ import annotations

import io
import random
import struct
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from imagegate import imaging
from imagegate.imaging import ImageInfo

RASTER = ("png", "jpeg", "webp")
MAGIC = {
    "png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "gif": lambda b: b[:6] in (b"GIF87a", b"GIF89a"),
}


def textured(width: int = 96, height: int = 64, *, alpha: bool = False) -> Image.Image:
    """A deterministic image with enough detail for lossy codecs to have work to do."""
    rng = random.Random(7)
    noise = Image.frombytes("L", (width // 4, height // 4), rng.randbytes(width * height // 16))
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((width, height)),
            noise.resize((width, height), Image.Resampling.BICUBIC),
            Image.new("L", (width, height), 90),
        ),
    )
    if alpha:
        base.putalpha(Image.linear_gradient("L").rotate(90).resize((width, height)))
    return base


def flat_with_shape(size: int = 80, bg=(235, 240, 250), fg=(30, 90, 200)) -> Image.Image:
    image = Image.new("RGB", (size, size), bg)
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=fg)
    return image


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size but holds almost no pixel data (never fully decodable)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# --- sniff / probe ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", RASTER + ("gif",))
def test_sniff_and_probe_recognize_each_raster_format(fmt: str) -> None:
    data = imaging.encode(textured(40, 30), fmt)
    assert imaging.sniff_format(data) == fmt
    info = imaging.probe(data)
    assert info == ImageInfo(fmt, imaging.MEDIA_TYPES[fmt], 40, 30, False)


@pytest.mark.parametrize("fmt", ("png", "webp"))
def test_probe_reports_alpha_for_images_with_an_alpha_channel(fmt: str) -> None:
    info = imaging.probe(imaging.encode(textured(alpha=True), fmt))
    assert info.has_alpha is True


def test_probe_reports_alpha_for_palette_png_with_transparency() -> None:
    image = Image.new("P", (10, 10), 0)
    image.info["transparency"] = 0
    assert imaging.probe(imaging.encode(image, "png")).has_alpha is True


@pytest.mark.parametrize(
    "doc",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80"/>',
        b'\xef\xbb\xbf  <?xml version="1.0"?>\n<!-- made by hand -->\n'
        b"<svg width=\"120px\" height='80'></svg>",
        b'<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg viewBox="0 0 120 80"></svg>',
        b'<svg width="120" viewBox="0,0,60,40"><rect/></svg>',
        b'<svg height="80" viewBox="0 0 60 40"></svg>',
        b'<svg width="90pt" height="60pt"></svg>',
    ],
)
def test_sniff_and_probe_recognize_svg_with_prolog_and_sizing_variants(doc: bytes) -> None:
    assert imaging.sniff_format(doc) == "svg"
    assert imaging.probe(doc) == ImageInfo("svg", "image/svg+xml", 120, 80, True)


def test_probe_gives_unsized_svg_the_browser_default_size() -> None:
    info = imaging.probe(b'<svg width="100%" height="auto"><circle r="4"/></svg>')
    assert (info.width, info.height) == imaging.SVG_DEFAULT_SIZE


@pytest.mark.parametrize(
    "data",
    [
        b"", b"hello world", b"<html><svg></svg></html>", b"<svgfoo/>", b"RIFF\0\0\0\0WAVE",
        b"\x89PN",
    ],  # fmt: skip
)
def test_sniff_returns_none_and_probe_raises_for_unknown_data(data: bytes) -> None:
    assert imaging.sniff_format(data) is None
    with pytest.raises(ValueError):
        imaging.probe(data)


def test_probe_raises_for_truncated_image() -> None:
    data = imaging.encode(textured(), "png")
    with pytest.raises(ValueError):
        imaging.probe(data[:20])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
# 121 MP is under Pillow's own bomb limit (2 x 89 MP), 200 MP over it
@pytest.mark.parametrize("size", [(11_000, 11_000), (20_000, 10_000)])
def test_images_over_the_pixel_limit_are_refused_without_decoding(size: tuple[int, int]) -> None:
    data = png_header_only(*size)
    assert imaging.probe(png_header_only(4000, 3000)).width == 4000
    assert imaging.sniff_format(data) == "png"
    with pytest.raises(ValueError, match="limit"):
        imaging.probe(data)
    with pytest.raises(ValueError, match="limit"):
        imaging.transcode(data, to_format="jpeg")


@settings(max_examples=15, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    fmt=st.sampled_from(RASTER),
)
def test_probe_reads_back_the_size_of_any_encoded_image(width: int, height: int, fmt: str) -> None:
    info = imaging.probe(imaging.encode(Image.new("RGB", (width, height), (9, 8, 7)), fmt))
    assert (info.format, info.width, info.height) == (fmt, width, height)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]),
)
def test_png_size_agrees_with_pillow_on_the_first_bytes_of_any_png(width: int, height: int, mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG", pnginfo=None)
    png = buffer.getvalue()
    assert imaging.png_size(png[: imaging.PNG_SIZE_BYTES]) == (width, height) == Image.open(io.BytesIO(png)).size


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "gif"])
def test_png_size_is_none_for_other_formats_and_for_a_cut_header(fmt: str) -> None:
    png = imaging.encode(Image.new("RGB", (20, 10)), "png")
    assert imaging.png_size(imaging.encode(Image.new("RGB", (20, 10)), fmt)) is None
    assert imaging.png_size(png[: imaging.PNG_SIZE_BYTES - 1]) is None
    assert imaging.png_size(png[:16] + bytes(8)) is None  # a zero size is no PNG's


def test_png_size_refuses_an_image_over_the_pixel_limit_as_probe_does() -> None:
    header = imaging.encode(Image.new("L", (1, 1)), "png")[:16] + struct.pack(">II", 20_000, 20_000)
    with pytest.raises(ValueError, match="limit"):
        imaging.png_size(header)


# --- encode / transcode -----------------------------------------------------------------------


@pytest.mark.parametrize("src", RASTER)
@pytest.mark.parametrize("dst", RASTER)
def test_transcode_between_every_pair_of_formats(src: str, dst: str) -> None:
    data = imaging.encode(textured(96, 64), src)
    out = imaging.transcode(data, to_format=dst)
    assert MAGIC[dst](out)
    image = decoded(out)
    assert image.format.lower() == dst
    assert image.size == (96, 64)


@pytest.mark.parametrize("fmt", ("jpeg", "webp"))
def test_lower_output_compression_gives_a_smaller_file(fmt: str) -> None:
    data = imaging.encode(textured(256, 256), "png")
    small = imaging.transcode(data, to_format=fmt, compression=10)
    large = imaging.transcode(data, to_format=fmt, compression=90)
    assert len(small) < len(large) * 0.7


def test_compression_maps_to_quality_with_clamping_and_defaults() -> None:
    assert imaging.quality_for_compression("jpeg", None) == imaging.JPEG_DEFAULT_QUALITY
    assert imaging.quality_for_compression("webp", None) == imaging.WEBP_DEFAULT_QUALITY
    assert imaging.quality_for_compression("jpeg", 0) == 1
    assert imaging.quality_for_compression("jpeg", 75) == 75
    assert imaging.quality_for_compression("jpeg", 100) == 100
    assert imaging.quality_for_compression("webp", 250) == 100


def test_png_ignores_compression_and_round_trips_exactly() -> None:
    image = textured(64, 48, alpha=True)
    assert imaging.encode(image, "png", 0) == imaging.encode(image, "png", 100)
    assert decoded(imaging.encode(image, "png")).tobytes() == image.tobytes()


def test_jpeg_flattens_alpha_onto_white() -> None:
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (8, 8, 24, 24))
    out = decoded(imaging.encode(image, "jpeg", compression=100))
    assert out.mode == "RGB"
    assert all(abs(c - 255) <= 3 for c in out.getpixel((1, 1)))
    r, g, b = out.getpixel((16, 16))
    assert b > 240 and r < 15 and g < 15


def test_transcode_keeps_alpha_into_png_and_webp() -> None:
    data = imaging.encode(textured(alpha=True), "png")
    for fmt in ("png", "webp"):
        assert imaging.probe(imaging.transcode(data, to_format=fmt)).has_alpha


def test_transcode_rejects_svg_and_unknown_targets() -> None:
    with pytest.raises(ValueError):
        imaging.transcode(b'<svg width="1" height="1"/>', to_format="png")
    with pytest.raises(ValueError):
        imaging.transcode(imaging.encode(textured(), "png"), to_format="bmp")
    with pytest.raises(ValueError):
        imaging.transcode(imaging.encode(textured(), "png"), to_format="svg")


def test_transcode_applies_exif_orientation() -> None:
    image = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    assert decoded(imaging.transcode(buf.getvalue(), to_format="png")).size == (20, 40)


# --- transparency -----------------------------------------------------------------------------


@pytest.mark.parametrize("src", RASTER)
@pytest.mark.parametrize("dst", ("png", "webp"))
def test_transparent_makes_flat_background_clear_and_keeps_shape_opaque(src: str, dst: str) -> None:
    data = imaging.encode(flat_with_shape(), src)
    out = decoded(imaging.transcode(data, to_format=dst, transparent=True)).convert("RGBA")
    w, h = out.size
    for corner in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, 2)):
        assert out.getpixel(corner)[3] <= 8, corner
    assert out.getpixel((w // 2, h // 2))[3] == 255
    r, g, b, _ = out.getpixel((w // 2, h // 2))
    assert b > 150 and r < 80


def test_transparency_leaves_enclosed_background_coloured_regions_opaque() -> None:
    image = Image.new("RGB", (100, 100), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 80, 80), fill=(0, 0, 0))
    draw.rectangle((40, 40, 60, 60), fill=(255, 255, 255))  # a white hole inside the shape
    out = imaging.make_background_transparent(image)
    assert out.getpixel((5, 5))[3] == 0
    assert out.getpixel((50, 50))[3] == 255
    assert out.getpixel((30, 30))[3] == 255


def test_transparency_works_on_large_images_through_the_shrunk_mask() -> None:
    image = flat_with_shape(1500)
    out = imaging.make_background_transparent(image)
    assert out.getpixel((0, 0))[3] == 0
    assert out.getpixel((300, 750))[3] == 0  # left of the circle, connected to the border
    assert out.getpixel((750, 750))[3] == 255


@pytest.mark.parametrize("dst", ("jpeg", "gif"))
def test_transparent_requires_png_or_webp_target(dst: str) -> None:
    with pytest.raises(ValueError, match="png or webp"):
        imaging.transcode(imaging.encode(flat_with_shape(), "png"), to_format=dst, transparent=True)


async def test_transcode_async_runs_off_the_event_loop_thread(monkeypatch) -> None:
    seen: list[str] = []
    original = imaging.transcode

    def spy(data: bytes, **kw):
        seen.append(threading.current_thread().name)
        return original(data, **kw)

    monkeypatch.setattr(imaging, "transcode", spy)
    out = await imaging.transcode_async(imaging.encode(textured(), "png"), to_format="webp")
    assert MAGIC["webp"](out)
    assert seen and seen[0].startswith("imagegate-imaging")



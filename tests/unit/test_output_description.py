"""What a generation's record says of each output, read without decoding the image."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, PngImagePlugin

from imagegate import imaging
from imagegate.generation import ImageOut, _describe


def described(data: bytes, media_type: str) -> dict:
    return _describe(ImageOut(0, base64.b64encode(data), media_type))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
def test_each_format_is_described_with_its_size_and_byte_count(fmt: str) -> None:
    data = imaging.encode(Image.new("RGB", (321, 123), (40, 90, 200)), fmt)
    info = described(data, imaging.MEDIA_TYPES[fmt])
    assert (info["width"], info["height"], info["bytes"]) == (321, 123, len(data))
    assert info["media_type"] == imaging.MEDIA_TYPES[fmt]


def test_a_jpeg_whose_metadata_runs_past_the_first_48_kib_is_still_measured() -> None:
    image = Image.new("RGB", (64, 48))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", icc_profile=bytes(60_000))  # its frame header comes after 60 kB
    info = described(buffer.getvalue(), "image/jpeg")
    assert (info["width"], info["height"]) == (64, 48)


def test_a_png_with_large_text_chunks_is_measured_from_its_first_bytes() -> None:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("comment", "x" * 100_000)
    buffer = io.BytesIO()
    Image.new("RGBA", (77, 55)).save(buffer, "PNG", pnginfo=meta)
    info = described(buffer.getvalue(), "image/png")
    assert (info["width"], info["height"]) == (77, 55)


def test_an_output_that_is_no_image_has_unknown_dimensions_but_a_byte_count() -> None:
    info = described(b"not an image at all, just some bytes", "image/png")
    assert (info["width"], info["height"], info["bytes"]) == (None, None, 36)
    garbled = _describe(ImageOut(0, b"!!!!" * 20, "image/png"))  # not base64
    assert (garbled["width"], garbled["height"]) == (None, None)

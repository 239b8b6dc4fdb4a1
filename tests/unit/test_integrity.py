"""imagegate.integrity: an upstream's image checked from its two ends, never decoded whole."""

from __future__ import annotations

import io
import random

import pybase64
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from imagegate import integrity
from imagegate.providers.base import MEDIA_TYPES
from imagegate.providers.relay import HEAD_B64_CHARS, TAIL_B64_CHARS

FORMATS = ("png", "jpeg", "webp", "gif")
EXAMPLES = settings(max_examples=60, deadline=None)


def encoded(fmt: str, width: int, height: int, seed: int, alpha: bool) -> bytes:
    """Noise over a gradient: each seed a different image, and compressed data of some length."""
    rng = random.Random(seed)
    mode = "RGBA" if alpha and fmt in ("png", "webp") else "RGB"
    image = Image.frombytes(mode, (width, height), rng.randbytes(width * height * len(mode)))
    image = Image.blend(image, Image.linear_gradient("L").resize((width, height)).convert(mode), 0.5)
    out = io.BytesIO()
    image.save(out, fmt.upper(), **({"quality": rng.randint(50, 100)} if fmt in ("jpeg", "webp") else {}))
    return out.getvalue()


images = st.builds(
    lambda fmt, width, height, seed, alpha: (fmt, width, height, encoded(fmt, width, height, seed, alpha)),
    st.sampled_from(FORMATS), st.integers(1, 80), st.integers(1, 80), st.integers(0, 2**32), st.booleans(),
)


def problems(data: bytes, fmt: str, width: int | None = None, height: int | None = None) -> list[str | None]:
    """What each way of checking says: raw bytes, base64 whole, and base64 relayed (its head,
    then its end), the head as long as a relay's."""
    b64 = pybase64.b64encode(data)
    head = b64[:HEAD_B64_CHARS]
    media_type = MEDIA_TYPES[fmt]
    relayed = (integrity.b64_start_problem(head, media_type, width, height, whole=len(head) == len(b64))
               or integrity.b64_end_problem(head, b64[-TAIL_B64_CHARS:], len(b64), media_type))
    return [integrity.raw_problem(data, media_type, width, height),
            integrity.b64_problem(b64, media_type, width, height), relayed]


def truncation_can_pass(fmt: str, cut: bytes) -> bool:
    """A GIF states no length: a cut that happens to end in its end bytes (a zero-length block
    and the trailer's 3B) cannot be told from a whole one by its ends."""
    return fmt == "gif" and cut.endswith(b"\x00\x3b")


@EXAMPLES
@given(images)
def test_a_valid_image_of_each_format_passes(image) -> None:
    fmt, width, height, data = image
    assert problems(data, fmt) == [None, None, None]
    declared = (width, height) if fmt == "png" else (None, None)  # the header carries it cheaply
    assert problems(data, fmt, *declared) == [None, None, None]


@EXAMPLES
@given(images, st.data())
def test_any_truncation_fails(image, data) -> None:
    fmt, _, _, whole = image
    cut = whole[: data.draw(st.integers(1, len(whole) - 1), label="kept")]
    assume(not truncation_can_pass(fmt, cut))
    assert all(problems(cut, fmt)), (fmt, len(cut), len(whole))


@EXAMPLES
@given(images, st.data())
def test_base64_cut_anywhere_fails(image, data) -> None:
    fmt, _, _, whole = image
    b64 = pybase64.b64encode(whole)
    cut = b64[: data.draw(st.integers(1, len(b64) - 1), label="kept")]
    assume(not truncation_can_pass(fmt, pybase64.b64decode(cut[: len(cut) // 4 * 4])) or len(cut) % 4)
    assert integrity.b64_problem(cut, MEDIA_TYPES[fmt]) is not None


@EXAMPLES
@given(st.binary(max_size=4096), st.sampled_from(FORMATS))
def test_bytes_without_the_format_s_magic_fail(garbage: bytes, fmt: str) -> None:
    assume(not garbage.startswith(b"\x89PNG\r\n\x1a\n" if fmt == "png" else b"\xff\xd8\xff" if fmt == "jpeg"
                                  else b"GIF8" if fmt == "gif" else b"RIFF"))
    assert all(problems(garbage, fmt))


@EXAMPLES
@given(images, st.text(alphabet=st.characters(exclude_characters="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                                                                   "qrstuvwxyz0123456789+/="), min_size=1, max_size=8),
       st.booleans())
def test_characters_outside_base64_at_either_end_fail(image, junk: str, at_end: bool) -> None:
    fmt, _, _, data = image
    b64 = pybase64.b64encode(data).decode()
    spoiled = (b64 + junk) if at_end else (junk + b64)
    assert integrity.b64_problem(spoiled.encode("utf-8", "surrogatepass"), MEDIA_TYPES[fmt]) is not None


@EXAMPLES
@given(images, st.sampled_from(FORMATS))
def test_an_image_declared_as_another_format_fails(image, declared: str) -> None:
    fmt, _, _, data = image
    assume(declared != fmt)
    assert all(problem and "but is a" in problem for problem in problems(data, declared))


@EXAMPLES
@given(st.integers(1, 80), st.integers(1, 80), st.integers(1, 80), st.integers(1, 80))
def test_a_png_of_another_size_than_declared_fails(width: int, height: int, said_w: int, said_h: int) -> None:
    assume((width, height) != (said_w, said_h))
    data = encoded("png", width, height, 0, False)
    assert all(p == f"is {width}x{height} pixels where the answer says {said_w}x{said_h}"
               for p in problems(data, "png", said_w, said_h))


@EXAMPLES
@given(images)
def test_the_decoded_length_is_read_from_the_base64_length_and_padding(image) -> None:
    _, _, _, data = image
    b64 = pybase64.b64encode(data)
    assert integrity.decoded_length(len(b64), b64[-TAIL_B64_CHARS:]) == len(data)


@pytest.mark.parametrize(("b64", "says"), [
    (b"!!!not*base64!!!", "is not valid base64: it holds '!'"),
    (b"iVBORw0KGgo", "is not valid base64: its length, 11 characters, is not a multiple of 4"),
    (b"iVBORw0KGgo=" + b"A" * 40, "is not valid base64: it has padding before its end"),
    (b"", "is empty"),
])
def test_base64_flaws_are_named(b64: bytes, says: str) -> None:
    assert integrity.b64_problem(b64, "image/png") == says


def test_each_format_s_end_is_named_when_it_is_missing() -> None:
    for fmt, says in [("png", "is not a valid PNG: it ends before its IEND chunk"),
                      ("jpeg", "is not a valid JPEG: it ends before its EOI marker"),
                      ("gif", "is not a valid GIF: it ends before its trailer")]:
        data = encoded(fmt, 32, 32, 1, False)
        assert integrity.raw_problem(data[:-1], MEDIA_TYPES[fmt]) == says
    webp = encoded("webp", 32, 32, 1, False)
    assert integrity.raw_problem(webp[:-10], "image/webp") == (
        f"is not a valid WEBP: it is {len(webp) - 10} bytes where its RIFF header says {len(webp)}")


def test_an_svg_is_only_checked_to_start_like_one() -> None:
    svg = b'<?xml version="1.0"?>\n<!-- drawn -->\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    assert integrity.raw_problem(svg, "image/svg+xml") is None  # cut short: not checked at its end
    assert integrity.b64_problem(pybase64.b64encode(svg + b"</svg>"), "image/svg+xml") is None
    assert integrity.raw_problem(b"<html><body>oops</body></html>", "image/svg+xml") == (
        "is not a valid SVG: it does not start with an <svg> root element")


def test_a_media_type_of_no_known_format_fails() -> None:
    data = encoded("png", 8, 8, 0, False)
    assert integrity.raw_problem(data, "image/heic") == "is declared 'image/heic', which is no image format the gateway knows"
    assert integrity.raw_problem(data, "IMAGE/PNG") is None


def test_a_relay_keeps_as_much_of_an_image_s_end_as_is_checked() -> None:
    assert TAIL_B64_CHARS >= integrity.TAIL_B64_CHARS and HEAD_B64_CHARS >= integrity.HEAD_B64_CHARS


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_few_padding_bytes_after_the_end_marker_pass(fmt: str) -> None:
    whole = encoded(fmt, 16, 16, 7, False)
    assert problems(whole + b"\x00\x00\x00\x00", fmt) == [None, None, None]

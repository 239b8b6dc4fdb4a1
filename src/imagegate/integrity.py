"""Cheap checks that an upstream's image is what it says it is, and arrived whole.

An upstream may answer 200 with something that is no usable image: base64 that is not base64,
bytes of no image format or of another format than the one it declares, an image cut short.
What can be told without decoding pixels, and without base64-decoding more than a few dozen
characters at each end of the image (of an SVG, as far into it as its root element may be), is
checked here:

* base64: a length that is a multiple of 4; only the base64 alphabet in the characters decoded;
  padding only at the very end;
* the start: the declared format's magic bytes (for SVG, a root ``<svg>`` element); for PNG an
  IHDR chunk first, whose width and height agree with any the upstream declared;
* the end: a PNG ends with its IEND chunk, a JPEG with its EOI marker (FF D9), a GIF with a block
  terminator and its trailer (00 3B); a WEBP's RIFF size is its length less 8. SVG is only
  checked at its start.

An image that passes may still be damaged in between (a CRC, a compressed stream): finding out
would mean decoding all of it, which relaying base64 untouched exists to avoid. Every check
returns what is wrong, worded to follow "<provider> returned an image that …", or ``None``.
"""

from __future__ import annotations

import re

import pybase64

from imagegate import imaging
from imagegate.providers.base import MEDIA_TYPES

#: Base64 decoded from an image's start (24 bytes): the magic bytes, a WEBP's RIFF size and a
#: PNG's IHDR up to its width and height.
HEAD_B64_CHARS = 32
#: Base64 decoded from an SVG's start: as far as ``imaging.sniff_format`` looks for its root.
SVG_HEAD_B64_CHARS = -(-imaging.SVG_SNIFF_BYTES // 3) * 4
#: Base64 decoded from an image's end: at least 16 bytes whatever the padding, enough for a PNG's
#: IEND chunk. A relay keeps as many (``providers.relay.TAIL_B64_CHARS``).
TAIL_B64_CHARS = 24

_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "svg": "SVG"}
_STARTS = {
    "png": "the PNG signature",
    "jpeg": "a JPEG SOI marker",
    "webp": "a RIFF WEBP header",
    "gif": "a GIF header",
    "svg": "an <svg> root element",
}
#: Length 0, type IEND, and the CRC of an empty IEND (PNG spec, 11.2.5).
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"
#: The last block's terminator, then the trailer (GIF89a spec, 16 and 27).
_GIF_END = b"\x00\x3b"
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")


def b64_problem(b64: bytes | memoryview, media_type: str, width: int | None = None,
                height: int | None = None) -> str | None:
    """What is wrong with a whole image sent as base64, as far as its two ends tell."""
    length = len(b64)
    head = b64[: _head_chars(media_type)]
    return (_length_problem(length)
            or b64_start_problem(head, media_type, width, height, whole=len(head) == length)
            or b64_end_problem(head, b64[-TAIL_B64_CHARS:], length, media_type))


def b64_start_problem(head: bytes | memoryview, media_type: str, width: int | None = None,
                      height: int | None = None, *, whole: bool = False) -> str | None:
    """What is wrong with the start of an image's base64: ``head`` is its first characters (at
    least :data:`HEAD_B64_CHARS`, or :data:`SVG_HEAD_B64_CHARS` for SVG, unless ``whole``)."""
    fmt = _format(media_type)
    if fmt is None:
        return f"is declared {media_type!r}, which is no image format the gateway knows"
    if not head:
        return "is empty"
    chars = head[: _head_chars(media_type)]
    if not whole and b"=" in bytes(chars):
        return "is not valid base64: it has padding before its end"
    data = _decoded(chars[: len(chars) // 4 * 4])
    if data is None:
        return _base64_flaw(chars)
    return _start_problem(data, fmt, width, height)


def b64_end_problem(head: bytes | memoryview, tail: bytes | memoryview, length: int,
                    media_type: str) -> str | None:
    """What is wrong with the end of an image's base64 of ``length`` characters: ``head`` is
    its first characters (as for :func:`b64_start_problem`), ``tail`` its last (at least
    :data:`TAIL_B64_CHARS` unless the image is shorter)."""
    if problem := _length_problem(length):
        return problem
    tail = tail[len(tail) % 4:]  # whole groups of 4, counted from the end
    end = _decoded(tail)
    if end is None:
        return _base64_flaw(tail)
    fmt = _format(media_type)
    start = _decoded(head[:HEAD_B64_CHARS])
    if fmt is None or start is None:
        return None  # the start is what is wrong (b64_start_problem)
    return _end_problem(start, end, decoded_length(length, bytes(tail[-2:])), fmt)


def raw_problem(data: bytes, media_type: str, width: int | None = None, height: int | None = None) -> str | None:
    """What is wrong with a whole image sent as raw bytes, as far as its two ends tell."""
    fmt = _format(media_type)
    if fmt is None:
        return f"is declared {media_type!r}, which is no image format the gateway knows"
    if not data:
        return "is empty"
    return (_start_problem(data[: imaging.SVG_SNIFF_BYTES if fmt == "svg" else HEAD_B64_CHARS], fmt, width, height)
            or _end_problem(data[:HEAD_B64_CHARS], data[-TAIL_B64_CHARS:], len(data), fmt))


def decoded_length(length: int, tail: bytes) -> int:
    """Bytes of image a base64 text of ``length`` characters ending in ``tail`` holds."""
    padding = 2 if tail.endswith(b"==") else 1 if tail.endswith(b"=") else 0
    return (length - padding) * 3 // 4


def _format(media_type: str) -> str | None:
    try:
        return imaging.normalize_format(media_type)
    except ValueError:
        return None


def _head_chars(media_type: str) -> int:
    return SVG_HEAD_B64_CHARS if _format(media_type) == "svg" else HEAD_B64_CHARS


def _length_problem(length: int) -> str | None:
    if length % 4:
        return f"is not valid base64: its length, {length} characters, is not a multiple of 4"
    return None


def _decoded(chars: bytes | memoryview) -> bytes | None:
    try:
        return pybase64.b64decode(chars, validate=True)
    except ValueError:  # binascii.Error is one too
        return None


def _base64_flaw(chars: bytes | memoryview) -> str:
    found = _NOT_BASE64.search(bytes(chars))
    if found is not None:
        return f"is not valid base64: it holds {chr(found.group()[0])!r}"
    return "is not valid base64: it has padding before its end"


def _start_problem(head: bytes, fmt: str, width: int | None, height: int | None) -> str | None:
    found = imaging.sniff_format(head)
    if found != fmt:
        if found is None or found == "svg":  # (a raster head is too short to tell an SVG by)
            return f"is not a valid {_NAMES[fmt]}: it does not start with {_STARTS[fmt]}"
        return f"is declared {MEDIA_TYPES[fmt]} but is a {_NAMES[found]}"
    if fmt != "png":
        return None
    if not head.startswith(imaging.PNG_START):
        return "is not a valid PNG: its first chunk is not IHDR"
    size = int.from_bytes(head[16:20]), int.from_bytes(head[20:24])
    if not all(size):
        return "is not a valid PNG: its header gives it no width or height"
    if width and height and size != (width, height):
        return f"is {size[0]}x{size[1]} pixels where the answer says {width}x{height}"
    return None


def _end_problem(head: bytes, tail: bytes, length: int, fmt: str) -> str | None:
    # A few bytes after the end marker (padding some encoders leave) are tolerated: the marker
    # itself cannot occur in a PNG's last chunk data or in a JPEG's entropy-coded data (0xFF
    # is stuffed there), so finding it near the end still means the image was not cut.
    if fmt == "png" and _PNG_IEND not in tail:
        return "is not a valid PNG: it ends before its IEND chunk"
    if fmt == "jpeg" and _JPEG_EOI not in tail:
        return "is not a valid JPEG: it ends before its EOI marker"
    if fmt == "gif" and not tail.endswith(_GIF_END):
        return "is not a valid GIF: it ends before its trailer"
    if fmt == "webp" and (stated := int.from_bytes(head[4:8], "little") + 8) != length:
        return f"is not a valid WEBP: it is {length} bytes where its RIFF header says {stated}"
    return None

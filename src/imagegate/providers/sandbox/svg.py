"""SVG rendering of a sandbox scene, in pieces that stream as ``draft`` text chunks."""

from __future__ import annotations

import math
import re
from xml.sax.saxutils import escape

import pybase64
from PIL import Image as PILImage
from PIL import ImageOps

from imagegate import imaging
from imagegate.providers.sandbox.scene import RGB, Ellipse, Ring, Scene


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


def _fmt(v: float) -> str:
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _hex(color: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

"""Upstream SVG made safe: a corpus of known attacks (``data/svg_attacks.yaml``) of which nothing
survives, a plain drawing (``data/benign.svg``) that keeps everything it draws with, and the
events of a provider with every SVG in them sanitized or refused."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pybase64
import pytest
import yaml

from imagegate import imaging
from imagegate.errors import UpstreamError
from imagegate.providers.base import Blob, Done, Image, Partial, ProviderEvent, RelayedImage, TextChunk, Usage
from imagegate.providers.relay import ByteRelay
from imagegate.svgsafety import MAX_SVG_BYTES, sanitize_svg, sanitized_events

DATA = Path(__file__).parent / "data"
ATTACKS: dict[str, str] = yaml.safe_load((DATA / "svg_attacks.yaml").read_text())
BENIGN = (DATA / "benign.svg").read_bytes()
ROOT = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'
SVG_NS, XLINK_HREF = "{http://www.w3.org/2000/svg}", "{http://www.w3.org/1999/xlink}href"
NEVER = {"script", "foreignObject", "iframe", "object", "embed", "handler", "html", "body", "img"}
ANIMATIONS = {"animate", "set", "animateMotion", "animateTransform", "animateColor"}
#: A reference that stays in the document or its origin: a fragment, a raster image's data URL,
#: or a path without a scheme or host.
STAYS_HOME = re.compile(r"#|data:image/(png|jpeg|gif|webp)[;,]|(?![a-z][a-z0-9+.-]*:)(?![/\\]{2})", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*([^)]*)\)", re.IGNORECASE)


def harmless(clean: bytes) -> None:
    """Fails on anything in ``clean`` that could run script, reach outside the document's origin
    or expand entities."""
    assert b"<!DOCTYPE" not in clean and b"<!ENTITY" not in clean and b"<?xml-stylesheet" not in clean
    assert b"root:" not in clean and len(clean) < 10_000
    root = ET.fromstring(clean)
    for element in root.iter():
        assert element.tag.startswith(SVG_NS), element.tag
        name = element.tag.removeprefix(SVG_NS)
        assert name not in NEVER
        for attribute, value in element.attrib.items():
            assert "}" not in attribute or attribute == XLINK_HREF, attribute
            assert not attribute.lower().startswith("on"), attribute
            if attribute in ("href", XLINK_HREF):
                assert STAYS_HOME.match(value.strip()), value
            for reference in CSS_URL.findall(value):
                assert STAYS_HOME.match(reference.strip(" '\"")), value
            if "javascript:" in re.sub(r"\s", "", value.lower()):  # inert: an animation of nothing
                assert name in ANIMATIONS and "attributeName" not in element.attrib, (name, value)
        if name in ANIMATIONS:
            target = element.get("attributeName", "").lower()
            assert "href" not in target and not target.startswith("on"), target
        if name == "style":
            css = "".join(element.itertext())
            assert "@import" not in css and "javascript:" not in css.lower() and "expression(" not in css
            assert all(STAYS_HOME.match(ref.strip(" '\"")) for ref in CSS_URL.findall(css)), css


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_attack_of_the_corpus_survives_sanitizing(name: str) -> None:
    document = ATTACKS[name].replace("{svg}", ROOT).encode()
    try:
        clean = sanitize_svg(document)
    except ValueError:
        return  # refused whole: none of it reaches a client
    harmless(clean)


def test_a_plain_drawing_keeps_every_element_attribute_and_word() -> None:
    clean = sanitize_svg(BENIGN)
    harmless(clean)

    def drawing(document: bytes) -> list[tuple[str, dict[str, str], str, str]]:
        """Each element: its name, its attributes (``xlink:href`` as ``href``), its words."""
        return [
            (e.tag, {k.replace(XLINK_HREF, "href"): v for k, v in e.attrib.items()},
             " ".join((e.text or "").split()), " ".join((e.tail or "").split()))
            for e in ET.fromstring(document).iter()
        ]

    assert drawing(clean) == drawing(BENIGN)
    assert [words for *_, words, _tail in drawing(clean) if words] == ["Dusk over the hills", "A drawing", "Dusk", "over"]
    assert imaging.probe(clean) == imaging.ImageInfo("svg", "image/svg+xml", 320, 200, True)


@pytest.mark.parametrize("levels", [5_000, 200_000])
def test_deep_nesting_is_refused_before_it_can_blow_up(levels: int) -> None:
    document = ROOT.encode() + b"<g>" * levels + b"</g>" * levels + b"</svg>"
    started = time.monotonic()
    with pytest.raises(ValueError, match="nested too deeply"):
        sanitize_svg(document)
    assert time.monotonic() - started < 2


def test_an_svg_over_the_size_limit_is_refused() -> None:
    padding = b"<!--" + b" " * MAX_SVG_BYTES + b"-->"
    with pytest.raises(ValueError, match="over"):
        sanitize_svg(ROOT.encode() + padding + b"</svg>")


# --- the events of a provider ---

HOSTILE = ATTACKS["script_element"].replace("{svg}", ROOT).encode()
PNG = imaging.encode(imaging.Image.new("RGB", (2, 2)), "png")


async def run(*events: ProviderEvent) -> list[ProviderEvent]:
    async def provider() -> AsyncIterator[ProviderEvent]:
        for event in events:
            yield event

    return [event async for event in sanitized_events(provider(), "Upstream")]


async def test_svg_images_and_previews_are_sanitized_and_raster_ones_pass_untouched() -> None:
    raster = Image(Blob.from_b64(pybase64.b64encode(PNG)), "image/png")
    preview, image, same, done = await run(
        Partial(0, Blob.from_raw(HOSTILE), "image/svg+xml"),
        Image(Blob.from_b64(pybase64.b64encode(HOSTILE)), "image/svg+xml", 10, 10),
        raster,
        Done(Usage()),
    )
    for event in (preview, image):
        harmless(event.image.raw)
        assert b"<rect" in event.image.raw and event.media_type == "image/svg+xml"
    assert image.width == 10 and same is raster and isinstance(done, Done)


async def test_an_svg_image_that_cannot_be_made_safe_is_an_upstream_error_and_its_preview_dropped() -> None:
    broken = ATTACKS["billion_laughs"].encode()
    assert await run(Partial(0, Blob.from_raw(broken), "image/svg+xml")) == []
    with pytest.raises(UpstreamError, match="Upstream sent an SVG image that cannot be made safe"):
        await run(Image(Blob.from_raw(broken), "image/svg+xml"))


async def test_an_svg_relayed_as_it_arrives_is_refused_and_its_relay_abandoned() -> None:
    relay = ByteRelay(pybase64.b64encode(HOSTILE))
    with pytest.raises(UpstreamError, match="an SVG image where none was asked for"):
        await run(RelayedImage(relay, "image/svg+xml"))
    await relay.put(b"more")  # abandoned: dropped, never waited on
    assert [chunk async for chunk in _ended(relay)] == []


async def _ended(relay: ByteRelay) -> AsyncIterator[bytes]:
    relay.end()
    async for chunk in relay.chunks():
        yield chunk


async def test_draft_markup_is_held_until_its_image_then_passed_on_sanitized_whole() -> None:
    text = HOSTILE.decode()
    pieces = [text[:30], text[30:70], text[70:]]
    events = await run(
        TextChunk("thinking about it", "reasoning"),
        *(TextChunk(piece, "draft") for piece in pieces),
        Image(Blob.from_raw(HOSTILE), "image/svg+xml"),
        TextChunk("<svg><script>alert(1)</script>", "draft"),  # never a whole document: dropped
        Done(Usage()),
    )
    assert [type(e).__name__ for e in events] == ["TextChunk", "TextChunk", "Image", "Done"]
    assert events[0] == TextChunk("thinking about it", "reasoning")
    assert events[1].phase == "draft" and events[1].text.encode() == events[2].image.raw
    harmless(events[1].text.encode())
